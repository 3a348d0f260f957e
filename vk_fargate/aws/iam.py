"""Is the pod execution role usable? The two causes of Fargate pods that never run.

A profile's pod execution role must exist and trust ``eks-fargate-pods.amazonaws.com``
(Fargate's kubelet assumes it to pull images and register the node); and the node only
becomes Ready when ``kube-system/aws-auth`` maps the role to the ``system:nodes`` group
(the seed chapter's "Not Ready" troubleshooting). The API call is checked in
``check_pod_execution_role``; the rules themselves are pure functions, tested on values.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import botocore.exceptions
import yaml

from vk_fargate import errors
from vk_fargate.aws.session import Client, error_code

FARGATE_PRINCIPAL = "eks-fargate-pods.amazonaws.com"
NODES_GROUP = "system:nodes"
_ROLE_ARN = re.compile(r"^arn:(?P<partition>aws[\w-]*):iam::(?P<account>\d{12}):role/(?P<path>.+)$")


def role_name(arn: str) -> str | None:
    """The role name in an IAM role ARN (the last segment of its path), or None. Pure."""
    match = _ROLE_ARN.match(arn)
    return match["path"].rsplit("/", 1)[-1] if match else None


def _without_path(arn: str) -> str:
    match = _ROLE_ARN.match(arn)
    if not match:
        return arn
    return f"arn:{match['partition']}:iam::{match['account']}:role/{role_name(arn)}"


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _action_matches(action: Any) -> bool:
    """IAM action patterns are case-insensitive, with ``*`` and ``?`` wildcards."""
    glob = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in str(action).lower()
    )
    return re.fullmatch(glob, "sts:assumerole") is not None


def _principal_matches(principal: Any) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return FARGATE_PRINCIPAL in (str(s) for s in _listed(principal.get("Service")))


def trust_problem(document: Any) -> str | None:
    """Why a trust policy does not let Fargate assume the role, or None when it does. Pure.

    ``document`` is the policy as a dict, or as JSON text (URL-encoded, as IAM's API
    returns it, or plain). Conditions are not evaluated: they only narrow who may assume
    the role (EKS recommends ``aws:SourceArn``), and IAM has the last word.
    """
    if isinstance(document, str):
        try:
            document = json.loads(urllib.parse.unquote(document))
        except ValueError:
            return "its trust policy is not valid JSON"
    if not isinstance(document, Mapping):
        return "its trust policy is not a JSON object"
    allowed = False
    for statement in _listed(document.get("Statement")):
        if not isinstance(statement, Mapping):
            continue
        applies = _principal_matches(statement.get("Principal")) and any(
            _action_matches(a) for a in _listed(statement.get("Action"))
        )
        if applies and statement.get("Effect") == "Deny":
            return f"its trust policy denies sts:AssumeRole to {FARGATE_PRINCIPAL}"
        allowed = allowed or (applies and statement.get("Effect") == "Allow")
    if not allowed:
        return (
            f"its trust policy does not allow sts:AssumeRole for the service principal "
            f"{FARGATE_PRINCIPAL}"
        )
    return None


def _check_pod_execution_role(iam: Client, arn: str) -> dict[str, Any]:
    name = role_name(arn)
    if name is None:
        raise errors.RoleNotUsable(arn, "not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    try:
        role: dict[str, Any] = iam.get_role(RoleName=name)["Role"]
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code == "NoSuchEntity":
            raise errors.RoleNotUsable(arn, "the role does not exist", code=code) from exc
        raise errors.RoleNotUsable(arn, f"cannot read the role: {exc}", code=code) from exc
    if role.get("Arn") != arn:
        raise errors.RoleNotUsable(
            arn, f"a role of that name exists with another ARN ({role.get('Arn')})"
        )
    reason = trust_problem(role.get("AssumeRolePolicyDocument"))
    if reason is not None:
        raise errors.RoleNotUsable(arn, reason)
    return role


async def check_pod_execution_role(iam: Client, arn: str) -> None:
    """Raise ``RoleNotUsable`` unless role ``arn`` exists and trusts Fargate's pods."""
    await asyncio.to_thread(_check_pod_execution_role, iam, arn)


def aws_auth_maps_role(config_map_data: Mapping[str, str] | None, role_arn: str) -> bool:
    """Whether ``kube-system/aws-auth`` maps ``role_arn`` into ``system:nodes``. Pure.

    ``config_map_data`` is the ConfigMap's ``data``; ``mapRoles`` is a YAML list of
    ``{rolearn, username, groups}``. aws-auth matches role ARNs *without* their IAM path
    (an EKS rule that trips many), so paths are ignored on both sides. Missing or
    unparsable data maps nothing.
    """
    text = (config_map_data or {}).get("mapRoles")
    if not text:
        return False
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    wanted = _without_path(role_arn)
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        if _without_path(str(entry.get("rolearn", ""))) != wanted:
            continue
        if NODES_GROUP in (str(g) for g in _listed(entry.get("groups"))):
            return True
    return False


def fargate_mapping(role_arn: str) -> dict[str, Any]:
    """The ``mapRoles`` entry EKS adds for a Fargate profile's pod execution role. Pure."""
    return {
        "rolearn": _without_path(role_arn),
        "username": "system:node:{{SessionName}}",
        "groups": ["system:bootstrappers", NODES_GROUP, "system:node-proxier"],
    }


def with_role_mapped(config_map_data: Mapping[str, str] | None, role_arn: str) -> dict[str, str]:
    """``aws-auth``'s data with ``role_arn`` mapped as EKS maps a Fargate pod execution role
    (unchanged when it already is; other entries and keys kept). Pure.

    Raises ``ValueError`` when ``mapRoles`` is not a YAML list: it is not ours to repair.
    """
    data = dict(config_map_data or {})
    if aws_auth_maps_role(data, role_arn):
        return data
    entries = yaml.safe_load(data.get("mapRoles") or "[]") or []
    if not isinstance(entries, list):
        raise ValueError("kube-system/aws-auth mapRoles is not a YAML list")
    data["mapRoles"] = yaml.safe_dump([*entries, fargate_mapping(role_arn)], sort_keys=False)
    return data
