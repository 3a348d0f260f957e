"""AWS settings and the one place boto3 clients are made.

Every client gets the same treatment, so no call can forget it: the endpoint URL (moto in
development and tests, unset in production), botocore's ``standard`` retry mode with an
explicit attempt count (throttling and transient 5xx are retried with jittered back-off
inside botocore), and connect/read timeouts so a hung call cannot hang a pod forever.

Each client is made from its own ``boto3.session.Session``: sessions are not thread-safe,
clients are, and our calls run in worker threads (``asyncio.to_thread``).

boto3 and ``botocore.config`` are imported when the first client is made, not with this
module: loading them takes 23 MiB, and a provider with AWS off (the default) never
makes a client.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any, Literal

import botocore.exceptions
import pydantic
import pydantic_settings

from vk_fargate import settings

if TYPE_CHECKING:
    import botocore.config

Client = Any
"""A boto3 client. boto3 generates them at run time and we install no stubs for them."""
Service = Literal["ec2", "iam", "logs"]


class AwsSettings(pydantic_settings.BaseSettings):
    """Whether and where to reach AWS; fields can be set as ``VK_FARGATE_AWS_<FIELD>``.

    ``region`` and ``cluster_name`` normally come from the provider's settings
    (``from_provider``) so they are defined once.
    """

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="VK_FARGATE_AWS_", frozen=True, extra="forbid"
    )

    enabled: bool = pydantic.Field(
        default=False,
        description="ENIs per pod, IAM and CloudWatch checks, log shipping; credentials "
        "from boto3's usual chain.",
    )
    region: str = "eu-central-1"
    endpoint_url: str | None = pydantic.Field(
        default=None, description="e.g. moto's server; unset: AWS's own endpoints."
    )
    cluster_name: str = pydantic.Field(default="vk-fargate", min_length=1)
    max_attempts: int = pydantic.Field(
        default=5,
        ge=0,
        le=20,
        description="botocore's retries.max_attempts: retries after a call's first try.",
    )
    connect_timeout: float = pydantic.Field(
        default=5.0, gt=0, description="Seconds to connect to AWS, per try."
    )
    read_timeout: float = pydantic.Field(
        default=30.0, gt=0, description="Seconds to wait for AWS's answer, per try."
    )

    @classmethod
    def from_provider(cls, provider: settings.ProviderSettings) -> AwsSettings:
        """The provider's region and cluster name, the rest from ``VK_FARGATE_AWS_*``."""
        return cls(region=provider.region, cluster_name=provider.cluster_name)


def client_config(aws: AwsSettings) -> botocore.config.Config:
    import botocore.config  # with the first client: see the docstring

    return botocore.config.Config(
        retries={"max_attempts": aws.max_attempts, "mode": "standard"},
        connect_timeout=aws.connect_timeout,
        read_timeout=aws.read_timeout,
        user_agent_extra="vk-fargate",
    )


def make_client(
    aws: AwsSettings,
    service: Service,
    *,
    region: str | None = None,
    credentials: tuple[str, str] | None = None,
) -> Client:
    """A boto3 client for ``service`` (blocking: it loads the service model from disk).

    ``region`` overrides ``aws.region``, e.g. for a logging output in another region.
    ``credentials`` (key id, secret) replace boto3's chain; only fakes need that.
    """
    import boto3.session  # with the first client: see the docstring

    if credentials is None:
        session = boto3.session.Session()
    else:
        key_id, secret = credentials
        session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
    return session.client(
        service,
        region_name=region or aws.region,
        endpoint_url=aws.endpoint_url,
        config=client_config(aws),
    )


async def client(aws: AwsSettings, service: Service, *, region: str | None = None) -> Client:
    """``make_client`` off the event loop."""
    return await asyncio.to_thread(make_client, aws, service, region=region)


@dataclasses.dataclass(frozen=True)
class Clients:
    """The three clients the provider uses."""

    ec2: Client
    iam: Client
    logs: Client


async def connect(aws: AwsSettings) -> Clients:
    """An EC2, an IAM and a CloudWatch Logs client for ``aws``."""
    ec2, iam, logs = await asyncio.gather(
        client(aws, "ec2"), client(aws, "iam"), client(aws, "logs")
    )
    return Clients(ec2=ec2, iam=iam, logs=logs)


def error_code(exc: BaseException) -> str | None:
    """AWS's error code of a ``ClientError`` (e.g. ``ThrottlingException``), else None."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
