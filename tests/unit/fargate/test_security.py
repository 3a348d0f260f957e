"""Tests of fargate.security (securityContext merge and what is not applied) and of
ocispec's capabilities and user."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import security
from vk_fargate.fleetd import ocispec


def test_nothing_set_is_none() -> None:
    assert security.effective({}, {"name": "a"}) is None
    assert security.effective({"securityContext": {}}, {"name": "a", "securityContext": {}}) is None


def test_the_containers_fields_override_the_pods() -> None:
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}}
    container = {
        "name": "a",
        "securityContext": {
            "runAsUser": 2000,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        },
    }
    assert security.effective(pod, container) == {
        "run_as_user": 2000,
        "run_as_group": 1000,
        "run_as_non_root": True,
        "read_only_root_filesystem": True,
        "allow_privilege_escalation": False,
        "capabilities_add": ["NET_ADMIN"],
        "capabilities_drop": ["ALL"],
        "seccomp_profile": None,
    }


def test_seccomp_runtime_default_is_applied_and_the_containers_profile_wins() -> None:
    pod = {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}
    merged = security.effective(pod, {"name": "a"})
    assert merged is not None and merged["seccomp_profile"] == "RuntimeDefault"
    own = {"name": "a", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}
    merged = security.effective(pod, own)
    assert merged is not None and merged["seccomp_profile"] == "Unconfined"
    assert security.not_applied({"containers": [own], **pod}) == []


def test_fields_not_applied_are_named_with_where_they_are() -> None:
    spec: dict[str, Any] = {
        "securityContext": {"fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {"name": "web", "securityContext": {"seLinuxOptions": {"level": "s0"}}},
            {"name": "ok", "securityContext": {"runAsUser": 1}},
            {
                "name": "own",
                "securityContext": {
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}
                },
            },
        ],
    }
    assert security.not_applied(spec) == [
        "securityContext.fsGroup",
        "containers[web].securityContext.seLinuxOptions",
        "containers[own].securityContext.seccompProfile",
    ]
    assert security.not_applied({"containers": [{"name": "a"}]}) == []


@pytest.mark.parametrize(
    ("add", "drop", "has", "lacks"),
    [
        ((), (), "CAP_CHOWN", "CAP_NET_ADMIN"),
        (("NET_ADMIN",), (), "CAP_NET_ADMIN", "CAP_SYS_ADMIN"),
        ((), ("chown",), "CAP_KILL", "CAP_CHOWN"),
        (("NET_BIND_SERVICE",), ("ALL",), "CAP_NET_BIND_SERVICE", "CAP_CHOWN"),
    ],
)
def test_capabilities_are_containerds_defaults_with_add_and_drop(
    add: tuple[str, ...], drop: tuple[str, ...], has: str, lacks: str
) -> None:
    caps = ocispec.capabilities(add, drop)
    assert has in caps and lacks not in caps
    assert len(caps) == len(set(caps))


def test_drop_all_add_one_leaves_exactly_that_one() -> None:
    assert ocispec.capabilities(("NET_BIND_SERVICE",), ("ALL",)) == ["CAP_NET_BIND_SERVICE"]


def test_the_pods_user_wins_over_the_images_and_the_images_stays_otherwise() -> None:
    base = {"process": {"user": {"uid": 1000, "gid": 1000}}}
    plain = ocispec.Container(["sh"], [], "/", "h", None, None, {})
    assert ocispec.user(base, plain) == (1000, 1000)
    both = ocispec.Container(["sh"], [], "/", "h", None, None, {}, run_as=(0, 5))
    assert ocispec.user(base, both) == (0, 5)
    assert ocispec.user({}, plain) == (0, 0)
