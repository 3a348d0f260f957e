"""Tests of aws.session: what every boto3 client is given (endpoint, retries, timeouts), and
the error codes read from botocore's errors."""

from __future__ import annotations

import botocore.exceptions
import pytest

from vk_fargate import settings
from vk_fargate.aws import session


def test_clients_get_the_endpoint_retries_and_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_FARGATE_AWS_ENABLED", "true")
    monkeypatch.setenv("VK_FARGATE_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VK_FARGATE_AWS_MAX_ATTEMPTS", "7")
    provider = settings.ProviderSettings(region="us-west-2", cluster_name="blue")

    aws = session.AwsSettings.from_provider(provider)

    assert (aws.enabled, aws.region, aws.cluster_name) == (True, "us-west-2", "blue")
    client = session.make_client(aws, "logs", region="eu-west-1", credentials=("k", "s"))
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-west-1"
    # botocore counts the first try in total_max_attempts: 7 retries are 8 tries.
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 8}
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5.0, 30.0)


def test_error_codes_come_from_client_errors_only() -> None:
    error = {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}
    assert session.error_code(botocore.exceptions.ClientError(error, "Op")) == "ThrottlingException"
    assert session.error_code(ValueError("x")) is None
