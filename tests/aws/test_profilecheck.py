"""What AWS says of a Fargate profile (the session's moto server): subnets and role decide
whether it can launch pods, VPC DNS only warns, and an unreachable AWS is an error to
retry, never a verdict."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.aws import test_network as net
from vk_fargate import errors
from vk_fargate.aws import profilecheck, session

FARGATE_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "eks-fargate-pods.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def vpc(ec2: Any, *, dns: bool = True) -> tuple[str, str, str]:
    """A VPC with one private and one public subnet: (vpc, private, public)."""
    vpc_id = net.make_vpc(ec2)
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
        ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute: {"Value": dns}})
    private = net.make_subnet(ec2, vpc_id, "10.0.1.0/24", "a")
    public = net.make_subnet(ec2, vpc_id, "10.0.2.0/24", "b")
    table = net.route_table(ec2, vpc_id, gateway_id=net.internet_gateway(ec2, vpc_id))
    ec2.associate_route_table(RouteTableId=table, SubnetId=public)
    return vpc_id, private, public


def role(iam: Any, trust: dict[str, Any] = FARGATE_TRUST) -> str:
    made = iam.create_role(RoleName="pods", AssumeRolePolicyDocument=json.dumps(trust))
    return str(made["Role"]["Arn"])


async def test_private_subnets_and_a_trusting_role_make_a_usable_profile(
    clients: session.Clients,
) -> None:
    vpc_id, private, _ = vpc(clients.ec2)
    verdict = await profilecheck.check(clients, subnets=[private], role_arn=role(clients.iam))
    assert verdict == profilecheck.Verdict(problem=None, dns_warnings=(), vpcs=(vpc_id,))


async def test_a_public_subnet_blocks_the_profile_naming_the_subnet(
    clients: session.Clients,
) -> None:
    _, private, public = vpc(clients.ec2)
    verdict = await profilecheck.check(
        clients, subnets=[private, public], role_arn=role(clients.iam)
    )
    assert verdict.problem is not None
    assert f"subnet {public} is public" in verdict.problem


async def test_a_missing_subnet_blocks_the_profile(clients: session.Clients) -> None:
    verdict = await profilecheck.check(clients, subnets=["subnet-0123456789abcdef0"], role_arn="")
    assert verdict.problem == "subnet subnet-0123456789abcdef0 does not exist"


async def test_a_role_that_does_not_trust_fargate_pods_blocks_the_profile(
    clients: session.Clients,
) -> None:
    _, private, _ = vpc(clients.ec2)
    trust = json.loads(json.dumps(FARGATE_TRUST))
    trust["Statement"][0]["Principal"]["Service"] = "ec2.amazonaws.com"
    arn = role(clients.iam, trust)
    verdict = await profilecheck.check(clients, subnets=[private], role_arn=arn)
    assert verdict.problem is not None
    assert verdict.problem.startswith(f"pod execution role {arn}:")
    assert "eks-fargate-pods.amazonaws.com" in verdict.problem


async def test_a_missing_role_blocks_the_profile(clients: session.Clients) -> None:
    arn = "arn:aws:iam::123456789012:role/nobody"
    verdict = await profilecheck.check(clients, subnets=[], role_arn=arn)
    assert verdict.problem == f"pod execution role {arn}: the role does not exist"


async def test_vpc_dns_off_warns_but_does_not_block(clients: session.Clients) -> None:
    vpc_id, private, _ = vpc(clients.ec2, dns=False)
    verdict = await profilecheck.check(clients, subnets=[private], role_arn=role(clients.iam))
    assert verdict.problem is None
    assert len(verdict.dns_warnings) == 2
    assert all(vpc_id in w and "CoreDNS" in w for w in verdict.dns_warnings)
    assert "enableDnsSupport" in verdict.dns_warnings[0]
    assert "enableDnsHostnames" in verdict.dns_warnings[1]


async def test_an_unreachable_aws_is_an_error_to_retry_not_a_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    closed = session.AwsSettings(
        region=net.REGION, endpoint_url="http://127.0.0.1:9", max_attempts=0, connect_timeout=1
    )
    clients = session.Clients(
        ec2=session.make_client(closed, "ec2"),
        iam=session.make_client(closed, "iam"),
        logs=session.make_client(closed, "logs"),
    )
    with pytest.raises(errors.AwsError) as caught:
        await profilecheck.check(clients, subnets=["subnet-1"], role_arn="")
    assert not isinstance(
        caught.value, (errors.SubnetNotFound, errors.SubnetNotPrivate, errors.RoleNotUsable)
    )
    assert "cannot check the profile against AWS" in str(caught.value)


async def test_a_profile_without_subnets_checks_no_vpc(clients: session.Clients) -> None:
    verdict = await profilecheck.check(clients, subnets=[], role_arn=role(clients.iam))
    assert verdict == profilecheck.Verdict(problem=None, dns_warnings=(), vpcs=())
