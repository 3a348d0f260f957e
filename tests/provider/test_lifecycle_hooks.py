"""Lifecycle hooks and termination messages through the real stack: a container's
termination file fills ``lastState.terminated.message``, and at the pod's deletion its
preStop hook's output is in ``kubectl logs -f`` before the SIGTERM's, before it ends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate.devcluster import binaries, cluster

pytestmark = pytest.mark.e2e

# The first run leaves a message and fails; the next one (the emptyDir remembers) runs
# until SIGTERM, which it answers; the preStop hook writes into PID 1's stdout.
SCRIPT = """
if [ ! -e /data/ran ]; then touch /data/ran; printf 'first run failed' > /tmp/end; exit 1; fi
trap 'echo term; exit 0' TERM
echo up
while :; do sleep 0.1; done
"""


def _pod() -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "busybox",
        "command": ["sh", "-c", SCRIPT],
        "terminationMessagePath": "/tmp/end",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo bye > /proc/1/fd/1"]}}},
    }
    return conftest.pod(
        "hooked",
        container,
        terminationGracePeriodSeconds=20,
        volumes=[{"name": "data", "emptyDir": {}}],
    )


async def test_pre_stop_output_in_the_log_and_termination_message(
    api: k8s.ApiClient, provider: conftest.Provider, local_cluster: cluster.Cluster
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "hooks")
    await core.create_namespaced_pod(ns, _pod())

    async def restarted_and_running() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("hooked", ns)
        statuses = pod.status.container_statuses or []
        ok = statuses and statuses[0].restart_count >= 1 and statuses[0].state.running
        return pod if ok else None

    pod = await waiting.until(restarted_and_running, timeout=90, what="the restarted app running")
    last = pod.status.container_statuses[0].last_state.terminated
    assert (last.exit_code, last.message) == (1, "first run failed")

    follower = await asyncio.create_subprocess_exec(
        str(binaries.kubectl_path()),
        "--kubeconfig",
        str(local_cluster.kubeconfig),
        "logs",
        "-f",
        "-n",
        ns,
        "hooked",
        stdout=asyncio.subprocess.PIPE,
    )
    assert follower.stdout is not None
    lines: list[str] = []
    try:
        first = await asyncio.wait_for(follower.stdout.readline(), timeout=30)
        assert first == b"up\n"
        await core.delete_namespaced_pod("hooked", ns)

        async def to_term() -> None:
            assert follower.stdout is not None
            while (line := await follower.stdout.readline()) and line != b"term\n":
                lines.append(line.decode())
            lines.append(line.decode())

        await asyncio.wait_for(to_term(), timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            follower.kill()
        await follower.wait()
    assert lines == ["bye\n", "term\n"]
    await core.delete_namespace(ns)


async def test_a_failed_post_start_is_an_event_and_a_restart(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "poststart")
    container = {
        "name": "app",
        "image": "busybox",
        "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 1"]}}},
    }
    await core.create_namespaced_pod(ns, conftest.pod("hooked", container))

    async def events() -> dict[str, list[str]] | None:
        found = await core.list_namespaced_event(ns, field_selector="involvedObject.name=hooked")
        by_reason: dict[str, list[str]] = {}
        for event in found.items:
            by_reason.setdefault(event.reason, []).append(event.message)
        return by_reason if "FailedPostStartHook" in by_reason else None

    seen = await waiting.until(events, timeout=60, what="the FailedPostStartHook event")
    assert set(seen["FailedPostStartHook"]) == {"PostStartHook failed"}

    async def restarted() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("hooked", ns)
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].restart_count >= 1 else None

    await waiting.until(restarted, timeout=60, what="a restart")
    await core.delete_namespace(ns)
