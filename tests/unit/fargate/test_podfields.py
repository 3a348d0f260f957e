"""Pod fields vk-fargate cannot honour are refused or named, never ignored."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import podfields

APP = {"name": "app", "image": "busybox"}


def spec(**fields: Any) -> dict[str, Any]:
    return {"containers": [APP], **fields}


def test_a_plain_pod_is_neither_refused_nor_warned_about() -> None:
    plain = spec(dnsPolicy="ClusterFirst", enableServiceLinks=True, priority=0)
    assert podfields.refused(plain) == []
    assert podfields.not_applied(plain) == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"os": {"name": "windows"}}, "os.name windows"),
        ({"dnsPolicy": "ClusterFirstWithHostNet"}, "dnsPolicy ClusterFirstWithHostNet"),
        ({"resourceClaims": [{"name": "gpu"}]}, "resourceClaims"),
        (
            {"containers": [{**APP, "volumeDevices": [{"name": "d", "devicePath": "/dev/x"}]}]},
            "containers[app].volumeDevices",
        ),
        (
            {"initContainers": [{**APP, "resources": {"claims": [{"name": "gpu"}]}}]},
            "initContainers[app].resources.claims",
        ),
    ],
)
def test_fields_the_pod_cannot_run_without_are_refused(fields: dict[str, Any], named: str) -> None:
    (reason,) = podfields.refused(spec(**fields))
    assert reason.startswith(named)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"shareProcessNamespace": True}, "shareProcessNamespace"),
        ({"hostUsers": False}, "hostUsers"),
        ({"runtimeClassName": "gvisor"}, "runtimeClassName gvisor"),
        ({"resources": {"limits": {"cpu": "1"}}}, "resources (pod-level"),
        ({"nodeSelector": {"disk": "ssd"}, "affinity": {"podAntiAffinity": {}}}, "nodeSelector/"),
        ({"priorityClassName": "high"}, "priorityClassName"),
    ],
)
def test_fields_the_pod_runs_without_are_named(fields: dict[str, Any], named: str) -> None:
    found = podfields.not_applied(spec(**fields))
    assert found and found[0].startswith(named), found
    assert podfields.refused(spec(**fields)) == []
