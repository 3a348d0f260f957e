"""``kubectl attach`` through the real stack: kubectl, the API server proxying its
WebSocket to the provider's kubelet API, the fleet's attach channel, the shim and runc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest

pytestmark = pytest.mark.e2e


async def _running(core: k8s.CoreV1Api, ns: str, name: str) -> None:
    async def running() -> bool:
        pod = await core.read_namespaced_pod(name, ns)
        statuses = pod.status.container_statuses or []
        return bool(statuses and statuses[0].state.running)

    await waiting.until(running, timeout=90, what=f"pod {name} running")


async def test_kubectl_attach_sends_stdin_and_reads_the_output(
    api: k8s.ApiClient, provider: conftest.Provider, kubectl: list[str]
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "attach")
    container = {
        "name": "cat",
        "image": "busybox",
        "command": ["cat"],
        "stdin": True,
        "stdinOnce": True,
    }
    await core.create_namespaced_pod(ns, conftest.pod("cat", container, restartPolicy="Never"))
    await _running(core, ns, "cat")
    proc = await asyncio.create_subprocess_exec(
        *kubectl, "attach", "-i", "-n", ns, "cat", "-c", "cat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"hello through attach\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line == b"hello through attach\n"
        proc.stdin.close()  # stdinOnce: the container's stdin ends with this session's
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

    async def succeeded() -> bool:
        pod = await core.read_namespaced_pod("cat", ns)
        return bool(pod.status.phase == "Succeeded")

    await waiting.until(succeeded, timeout=60, what="the pod to succeed once stdin ended")
    logs = await core.read_namespaced_pod_log("cat", ns)
    assert logs == "hello through attach\n"


async def test_kubectl_attach_to_a_tty_container(
    api: k8s.ApiClient, provider: conftest.Provider, kubectl: list[str]
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "attach-tty")
    container = {"name": "sh", "image": "busybox", "command": ["sh"], "stdin": True, "tty": True}
    await core.create_namespaced_pod(ns, conftest.pod("shell", container, restartPolicy="Never"))
    await _running(core, ns, "shell")
    leader, follower = pty.openpty()  # kubectl -t wants a terminal of its own
    proc = await asyncio.create_subprocess_exec(
        *kubectl, "attach", "-it", "-n", ns, "shell",
        stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    os.set_blocking(leader, False)
    seen = b""

    async def shows(wanted: bytes) -> bool:
        nonlocal seen
        with contextlib.suppress(BlockingIOError):
            seen += os.read(leader, 65536)
        return wanted in seen

    try:
        os.write(leader, b"echo $((6*7))\r")
        await waiting.until(lambda: shows(b"42"), timeout=30, what="the shell's answer")
        os.write(leader, b"exit 4\r")
        await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        os.close(leader)
    assert proc.returncode != 0, seen.decode(errors="replace")  # the shell exited 4

    async def failed() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("shell", ns)
        return pod if pod.status.phase == "Failed" else None

    pod = await waiting.until(failed, timeout=60, what="the shell's pod to end")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 4
