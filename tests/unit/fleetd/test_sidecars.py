"""Tests of the kubelet's order of native sidecars (``fleetd.sidecars``)."""

from __future__ import annotations

import pytest

from vk_fargate.fleetd import sidecars


def test_app_containers_stop_together_then_sidecars_last_started_first() -> None:
    assert sidecars.stop_waves(["web", "job"], ["logs", "mesh"]) == [
        ["web", "job"],
        ["mesh"],
        ["logs"],
    ]


def test_without_sidecars_or_app_containers_no_empty_wave() -> None:
    assert sidecars.stop_waves(["web"], []) == [["web"]]
    assert sidecars.stop_waves([], ["logs"]) == [["logs"]]


@pytest.mark.parametrize(
    ("policy", "sidecar", "code", "again"),
    [
        ("Never", True, 0, True),  # a sidecar's own policy is Always
        ("Never", True, 137, True),
        ("OnFailure", True, 0, True),
        ("Never", False, 1, False),
        ("OnFailure", False, 0, False),
        ("OnFailure", False, 2, True),
        ("Always", False, 0, True),
    ],
)
def test_a_sidecar_restarts_whatever_the_pods_policy(
    policy: str, sidecar: bool, code: int, again: bool
) -> None:
    assert sidecars.restarts(policy, sidecar=sidecar, exit_code=code) is again
