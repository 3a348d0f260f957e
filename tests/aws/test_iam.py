"""Tests of aws.iam's check of the pod execution role against moto's IAM (the session's
moto server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.aws import test_iam as plain
from vk_fargate import errors
from vk_fargate.aws import iam, session


@pytest.fixture
def client(clients: session.Clients) -> Any:
    return clients.iam


def make_role(client: Any, document: dict[str, Any], *, name: str = "pods", path: str = "/") -> str:
    role = client.create_role(
        RoleName=name, Path=path, AssumeRolePolicyDocument=json.dumps(document)
    )
    return str(role["Role"]["Arn"])


async def test_a_role_trusting_fargate_pods_is_usable(client: Any) -> None:
    arn = make_role(client, plain.policy(plain.EC2, plain.FARGATE))
    await iam.check_pod_execution_role(client, arn)


async def test_a_role_with_a_path_is_found_by_its_name(client: Any) -> None:
    arn = make_role(client, plain.policy(plain.FARGATE), path="/team/eks/")
    assert arn.endswith(":role/team/eks/pods")
    await iam.check_pod_execution_role(client, arn)


async def test_a_role_trusting_someone_else_is_refused_with_the_reason(client: Any) -> None:
    arn = make_role(client, plain.policy(plain.EC2))

    with pytest.raises(errors.RoleNotUsable) as caught:
        await iam.check_pod_execution_role(client, arn)

    assert caught.value.role_arn == arn
    assert "eks-fargate-pods.amazonaws.com" in str(caught.value)
    assert "sts:AssumeRole" in str(caught.value)


async def test_a_missing_role_is_refused(client: Any) -> None:
    arn = "arn:aws:iam::123456789012:role/nobody"

    with pytest.raises(errors.RoleNotUsable, match="does not exist") as caught:
        await iam.check_pod_execution_role(client, arn)

    assert caught.value.code == "NoSuchEntity"
    assert arn in str(caught.value)


async def test_a_same_named_role_in_another_account_or_path_is_not_the_role(client: Any) -> None:
    arn = make_role(client, plain.policy(plain.FARGATE))
    for other in (
        arn.replace("123456789012", "210987654321"),
        arn.replace(":role/pods", ":role/elsewhere/pods"),
    ):
        with pytest.raises(errors.RoleNotUsable, match="another ARN"):
            await iam.check_pod_execution_role(client, other)
