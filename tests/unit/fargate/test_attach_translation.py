"""A pod container's ``stdin``, ``stdinOnce`` and ``tty`` on their way to the fleet's
spec (they were warned about before attach existed; now they are carried)."""

from __future__ import annotations

from typing import Any

from vk_fargate.fargate import dns, environment, microvms, podfields, sizing

SIZE = sizing.Size(1000, 2048, 20)


def the_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox", "stdin": True}],
            "containers": [
                {
                    "name": "shell",
                    "image": "busybox",
                    "stdin": True,
                    "stdinOnce": True,
                    "tty": True,
                },
                {"name": "plain", "image": "busybox"},
            ],
        },
    }


def test_stdin_stdin_once_and_tty_reach_the_fleet() -> None:
    spec = microvms.spec(
        the_pod(),
        size=SIZE,
        profile="p",
        cluster="c",
        sources=environment.Sources({}, {}, [], [], "node", SIZE),
        pull_secrets=[],
        names=dns.names(the_pod(), dns.Cluster()),
    )
    flags = {
        c.name: (c.stdin, c.stdin_once, c.tty) for c in [*spec.init_containers, *spec.containers]
    }
    assert flags == {
        "init": (True, False, False),
        "shell": (True, True, True),
        "plain": (False, False, False),
    }


def test_stdin_and_tty_are_not_warned_about() -> None:
    assert podfields.not_applied(the_pod()["spec"]) == []
