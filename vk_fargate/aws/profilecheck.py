"""A Fargate profile checked against AWS, as EKS checks one when it is created.

A profile's subnets must exist and be private, and its pod execution role must exist
and trust ``eks-fargate-pods.amazonaws.com``; either failing blocks the profile's
launches (the verdict's ``problem``). A VPC without DNS support or DNS hostnames only
warns: pods still launch, but CoreDNS on Fargate stays Pending (the seed's
troubleshooting). AWS being unreachable is neither: it raises ``AwsError`` so the
caller retries instead of condemning a good profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import botocore.exceptions

from vk_fargate import errors
from vk_fargate.aws import iam, network, session


@dataclasses.dataclass(frozen=True)
class Verdict:
    problem: str | None  # why the profile cannot launch pods; None when it can
    dns_warnings: tuple[str, ...] = ()
    vpcs: tuple[str, ...] = ()  # the VPCs whose DNS attributes were checked


async def check(clients: session.Clients, *, subnets: Sequence[str], role_arn: str) -> Verdict:
    """What AWS says of a profile with these subnets and pod execution role."""
    try:
        try:
            infos = await network.check_subnets(clients.ec2, subnets)
            if role_arn:
                await iam.check_pod_execution_role(clients.iam, role_arn)
        except (errors.SubnetNotFound, errors.SubnetNotPrivate, errors.RoleNotUsable) as exc:
            return Verdict(problem=exc.message)
        warnings: list[str] = []
        vpcs = tuple(sorted({info.vpc_id for info in infos}))
        for vpc_id in vpcs:
            warnings.extend(await network.check_vpc_dns(clients.ec2, vpc_id))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise errors.AwsError(
            f"cannot check the profile against AWS: {exc}", code=session.error_code(exc)
        ) from exc
    return Verdict(problem=None, dns_warnings=tuple(warnings), vpcs=vpcs)
