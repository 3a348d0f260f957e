"""Tests of aws.iam on plain values: which trust policies let Fargate's pods assume the
pod execution role, and the role's mapping in aws-auth."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
import yaml

from vk_fargate import errors
from vk_fargate.aws import iam

FARGATE = {
    "Effect": "Allow",
    "Principal": {"Service": "eks-fargate-pods.amazonaws.com"},
    "Action": "sts:AssumeRole",
}
EC2 = {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


@pytest.mark.parametrize("arn", ["", "pods", "arn:aws:iam::123456789012:user/pods"])
async def test_something_that_is_not_a_role_arn_is_refused_without_a_call(arn: str) -> None:
    # No client at all: the ARN is refused before any AWS call could be made.
    with pytest.raises(errors.RoleNotUsable, match="not an IAM role ARN"):
        await iam.check_pod_execution_role(None, arn)


@pytest.mark.parametrize(
    "document",
    [
        policy(FARGATE),
        policy({**FARGATE, "Principal": {"Service": ["ec2.amazonaws.com", iam.FARGATE_PRINCIPAL]}}),
        policy({**FARGATE, "Action": ["sts:TagSession", "sts:AssumeRole"]}),
        policy({**FARGATE, "Action": "sts:*"}),
        policy({**FARGATE, "Action": "STS:assumerole"}),
        policy({**FARGATE, "Principal": "*"}),
        {"Statement": FARGATE},  # a lone statement need not be a list
        policy(
            {
                **FARGATE,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": "arn:aws:eks:eu-central-1:1:fargateprofile/c/*"}
                },
            }
        ),
        json.dumps(policy(FARGATE)),
        urllib.parse.quote(json.dumps(policy(FARGATE))),  # as IAM's query API returns it
    ],
)
def test_trust_policies_that_let_fargate_assume_the_role(document: Any) -> None:
    assert iam.trust_problem(document) is None


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (policy(EC2), "does not allow"),
        (policy({**FARGATE, "Effect": "Deny"}), "denies"),
        (policy(FARGATE, {**FARGATE, "Effect": "Deny"}), "denies"),
        (policy({**FARGATE, "Action": "sts:AssumeRoleWithWebIdentity"}), "does not allow"),
        (policy({**FARGATE, "Action": "sts:TagSession"}), "does not allow"),
        (policy({**FARGATE, "Principal": {"AWS": iam.FARGATE_PRINCIPAL}}), "does not allow"),
        (policy(), "does not allow"),
        ("{not json", "not valid JSON"),
        (["a list"], "not a JSON object"),
    ],
)
def test_trust_policies_that_do_not(document: Any, says: str) -> None:
    problem = iam.trust_problem(document)
    assert problem is not None and says in problem


# ----------------------------------------------------------------------------- aws-auth

ROLE = "arn:aws:iam::123456789012:role/AmazonEKSFargatePodExecutionRole"
SEED_EXAMPLE = f"""
- groups:
  - system:bootstrappers
  - system:nodes
  - system:node-proxier
  rolearn: {ROLE}
  username: system:node:{{{{SessionName}}}}
"""


def test_the_seed_chapters_mapping_maps_the_role_into_system_nodes() -> None:
    assert iam.aws_auth_maps_role({"mapRoles": SEED_EXAMPLE}, ROLE)


def test_the_role_must_be_the_one_mapped() -> None:
    assert not iam.aws_auth_maps_role({"mapRoles": SEED_EXAMPLE}, ROLE + "2")
    assert not iam.aws_auth_maps_role(
        {"mapRoles": SEED_EXAMPLE}, ROLE.replace("123456789012", "210987654321")
    )


def test_a_mapping_without_system_nodes_does_not_count() -> None:
    text = f"- rolearn: {ROLE}\n  username: admin\n  groups: [system:masters]\n"
    assert not iam.aws_auth_maps_role({"mapRoles": text}, ROLE)


def test_one_matching_entry_among_several_is_enough() -> None:
    text = (
        f"- rolearn: {ROLE}\n  groups: [system:masters]\n"
        "- rolearn: arn:aws:iam::123456789012:role/nodes\n  groups: [system:nodes]\n"
        f"- rolearn: {ROLE}\n  groups: [system:nodes]\n"
    )
    assert iam.aws_auth_maps_role({"mapRoles": text}, ROLE)


def test_iam_paths_are_ignored_as_aws_auth_requires() -> None:
    with_path = "arn:aws:iam::123456789012:role/team/AmazonEKSFargatePodExecutionRole"
    assert iam.aws_auth_maps_role({"mapRoles": SEED_EXAMPLE}, with_path)
    mapped_with_path = SEED_EXAMPLE.replace(ROLE, with_path)
    assert iam.aws_auth_maps_role({"mapRoles": mapped_with_path}, ROLE)


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"mapUsers": SEED_EXAMPLE},
        {"mapRoles": ""},
        {"mapRoles": "- rolearn: [unclosed"},
        {"mapRoles": "just a string"},
        {"mapRoles": "- not a mapping\n- 42\n"},
        {"mapRoles": f"- rolearn: {ROLE}\n"},  # no groups at all
    ],
)
def test_missing_or_unparsable_data_maps_nothing(data: dict[str, str] | None) -> None:
    assert not iam.aws_auth_maps_role(data, ROLE)


def test_mapping_a_role_adds_eks_fargate_entry_and_keeps_the_others() -> None:
    arn = "arn:aws:iam::123456789012:role/team/pods"
    other = "- rolearn: arn:aws:iam::123456789012:role/nodes\n  groups: [system:nodes]\n"
    data = iam.with_role_mapped({"mapRoles": other, "mapUsers": "[]"}, arn)
    assert data["mapUsers"] == "[]"
    assert iam.aws_auth_maps_role(data, arn)
    assert iam.aws_auth_maps_role(data, "arn:aws:iam::123456789012:role/nodes")
    entries = yaml.safe_load(data["mapRoles"])
    assert entries[-1] == {
        "rolearn": "arn:aws:iam::123456789012:role/pods",
        "username": "system:node:{{SessionName}}",
        "groups": ["system:bootstrappers", "system:nodes", "system:node-proxier"],
    }
    assert iam.with_role_mapped(data, arn) == data  # once only


def test_mapping_into_a_missing_configmap_creates_the_list() -> None:
    data = iam.with_role_mapped(None, "arn:aws:iam::123456789012:role/pods")
    assert iam.aws_auth_maps_role(data, "arn:aws:iam::123456789012:role/pods")


def test_a_maproles_that_is_not_a_list_is_not_repaired() -> None:
    with pytest.raises(ValueError, match="not a YAML list"):
        iam.with_role_mapped({"mapRoles": "rolearn: x"}, "arn:aws:iam::123456789012:role/pods")
