"""kubectl exec, cp and port-forward into Fargate pods through the real stack: the real
kubectl, the API server proxying its WebSocket to the provider's kubelet API, the
fleet's streaming channel, runc in the pod's container.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import pty
import signal
import struct
import subprocess
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import kubectl, waiting
from tests.provider import conftest
from vk_fargate.devcluster import binaries, cluster, processes

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def _shell_pod() -> dict[str, Any]:
    container = {
        "name": "sh",
        "image": "busybox",
        "command": ["sleep", "3600"],
        "env": [{"name": "GREETING", "value": "hello from the pod"}],
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return conftest.pod("shell", container, volumes=[{"name": "data", "emptyDir": {}}])


def _web_pod() -> dict[str, Any]:
    container = {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}
    return conftest.pod("web", container)


async def _running(core: k8s.CoreV1Api, ns: str, name: str) -> None:
    async def running() -> bool:
        pod = await core.read_namespaced_pod(name, ns)
        statuses = pod.status.container_statuses or []
        return bool(statuses) and all(s.ready for s in statuses)

    await waiting.until(running, timeout=120, what=f"{name} ready")


@pytest.fixture(scope="module")
async def pods(api: k8s.ApiClient, provider: conftest.Provider) -> AsyncIterator[str]:
    """A namespace with the ``shell`` and ``web`` pods running."""
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "exec")
    await core.create_namespaced_pod(ns, _shell_pod())
    await core.create_namespaced_pod(ns, _web_pod())
    await _running(core, ns, "shell")
    await _running(core, ns, "web")
    yield ns
    await core.delete_namespace(ns)


async def _kubectl(
    cluster_: cluster.Cluster, *args: str, stdin: bytes | None = None
) -> tuple[int, bytes, str]:
    return await kubectl.run_async(cluster_.kubeconfig, *args, stdin=stdin, timeout=60)


async def test_exec_runs_as_the_container_with_its_env_and_hostname(
    pods: str, local_cluster: cluster.Cluster
) -> None:
    code, out, err = await _kubectl(local_cluster, "-n", pods, "exec", "shell", "--", "id")
    assert (code, err) == (0, "")
    assert out.decode().startswith("uid=1000 gid=3000")
    code, out, err = await _kubectl(local_cluster, "-n", pods, "exec", "shell", "--", "env")
    assert code == 0, err
    assert "GREETING=hello from the pod" in out.decode().splitlines()
    code, out, _ = await _kubectl(
        local_cluster, "-n", pods, "exec", "shell", "--", "cat", "/etc/hostname"
    )
    assert out == b"shell\n"


async def test_exec_pipes_stdin_and_returns_the_exit_code(
    pods: str, local_cluster: cluster.Cluster
) -> None:
    payload = os.urandom(MIB)
    code, out, err = await _kubectl(
        local_cluster, "-n", pods, "exec", "-i", "shell", "--", "wc", "-c", stdin=payload
    )
    assert (code, out.strip(), err) == (0, str(MIB).encode(), "")
    code, _, err = await _kubectl(
        local_cluster, "-n", pods, "exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"
    )
    assert code == 3
    assert "oops" in err and "command terminated with exit code 3" in err


async def test_a_command_missing_in_the_image_is_a_clear_error(
    pods: str, local_cluster: cluster.Cluster
) -> None:
    code, _, err = await _kubectl(local_cluster, "-n", pods, "exec", "shell", "--", "nosuch")
    assert code != 0
    assert '"nosuch"' in err and "not found" in err


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    """What the terminal shows until ``marker`` appears."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never came; the terminal showed {seen!r}")
        with contextlib.suppress(BlockingIOError):
            seen += os.read(fd, 4096)
            continue
        time.sleep(0.05)
    return seen


def _interactive_shell(kubeconfig: Path, ns: str) -> tuple[int, bytes, bytes]:
    """``kubectl exec -it`` under a pseudo-terminal: what ``stty size`` says before and
    after a resize, and kubectl's exit code."""
    master, slave = pty.openpty()
    _winsize(master, 24, 80)
    process = subprocess.Popen(
        [
            str(binaries.kubectl_path()),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            ns,
            "exec",
            "-it",
            "shell",
            "--",
            "sh",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    os.set_blocking(master, False)
    try:
        _read_until(master, b"$ ")  # the prompt of a shell on a terminal, uid 1000
        # The marker is computed, so the terminal's echo of the line cannot match it.
        os.write(master, b"stty size; echo end-$((1 + 1))\n")
        before = _read_until(master, b"end-2")
        # What a terminal emulator does: a new size, then SIGWINCH to the foreground.
        _winsize(master, 50, 132)
        process.send_signal(signal.SIGWINCH)
        # kubectl, the API server, the provider and runc pass it on in turn: asked
        # again until it shows (as a user at a real terminal would see it).
        after = b""
        for turn in range(3, 30):
            os.write(master, b"stty size; echo end-$((%d + 1))\n" % (turn - 1))
            after = _read_until(master, b"end-%d" % turn)
            if b"50 132" in after:
                break
            time.sleep(0.2)
        os.write(master, b"exit 0\n")
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, before, after


async def test_exec_with_a_terminal_sees_its_prompt_and_its_resize(
    pods: str, local_cluster: cluster.Cluster
) -> None:
    code, before, after = await asyncio.to_thread(
        _interactive_shell, local_cluster.kubeconfig, pods
    )
    assert b"24 80" in before
    assert b"50 132" in after
    assert code == 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_kubectl_cp_copies_a_file_in_and_out(
    pods: str, local_cluster: cluster.Cluster, tmp_path: Path
) -> None:
    source, back = tmp_path / "big.bin", tmp_path / "back.bin"
    source.write_bytes(os.urandom(10 * MIB))
    code, _, err = await _kubectl(local_cluster, "cp", str(source), f"{pods}/shell:/data/big.bin")
    assert code == 0, err
    code, _, err = await _kubectl(local_cluster, "cp", f"{pods}/shell:/data/big.bin", str(back))
    assert code == 0, err
    assert _sha256(back) == _sha256(source)


async def test_port_forward_serves_the_nginx_page_to_parallel_requests(
    pods: str, local_cluster: cluster.Cluster
) -> None:
    port = processes.free_ports(1)[0]
    forward = await asyncio.create_subprocess_exec(
        str(binaries.kubectl_path()),
        *("--kubeconfig", str(local_cluster.kubeconfig), "-n", pods),
        *("port-forward", "pod/web", f"{port}:80"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert forward.stdout is not None
        line = await asyncio.wait_for(forward.stdout.readline(), 60)
        assert f"127.0.0.1:{port} -> 80" in line.decode()

        async def fetch() -> bytes:
            curl = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--max-time", "30", f"http://127.0.0.1:{port}/",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await curl.communicate()
            assert curl.returncode == 0
            return out

        pages = await asyncio.gather(*(fetch() for _ in range(20)))
        assert all(b"Welcome to nginx!" in page for page in pages)
    finally:
        forward.terminate()
        await forward.wait()


async def test_a_user_without_pods_exec_is_refused(
    api: k8s.ApiClient, pods: str, local_cluster: cluster.Cluster, tmp_path: Path
) -> None:
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    await core.create_namespaced_service_account(pods, {"metadata": {"name": "viewer"}})
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    await rbac.create_namespaced_role(pods, {"metadata": {"name": "viewer"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": pods}],
    }
    await rbac.create_namespaced_role_binding(pods, binding)
    token = await core.create_namespaced_service_account_token(
        "viewer", pods, {"spec": {"expirationSeconds": 600}}
    )
    viewer = kubectl.token_kubeconfig(local_cluster.kubeconfig, token.status.token, tmp_path / "kc")
    code, out, err = await kubectl.run_async(
        viewer, "-n", pods, "get", "pod", "shell", "-o", "name"
    )
    assert (code, out) == (0, b"pod/shell\n"), err  # the token works: only exec is refused
    code, _, err = await kubectl.run_async(viewer, "-n", pods, "exec", "shell", "--", "id")
    assert code != 0
    assert 'cannot create resource "pods/exec"' in err or 'cannot get resource "pods/exec"' in err


async def test_kubectl_debug_is_refused_with_a_reason(
    api: k8s.ApiClient, pods: str, local_cluster: cluster.Cluster
) -> None:
    """An ephemeral container cannot join a running microVM: it is reported as one that
    could not start, with the reason, and a warning event says it too."""
    code, _, err = await _kubectl(
        local_cluster,
        "-n",
        pods,
        "debug",
        "shell",
        "--image=busybox",
        "-c",
        "debugger",
        "--",
        "true",
    )
    assert code == 0, err
    core = k8s.CoreV1Api(api)

    async def refused() -> Any:
        pod = await core.read_namespaced_pod("shell", pods)
        statuses = pod.status.ephemeral_container_statuses or []
        return statuses[0].state.terminated if statuses else None

    terminated = await waiting.until(refused, timeout=60, what="the debugger's status")
    assert (terminated.reason, terminated.exit_code) == ("StartError", 128)
    assert "ephemeral containers are not run by vk-fargate" in terminated.message

    async def warned() -> bool:
        events = await core.list_namespaced_event(pods, field_selector="reason=Failed")
        return any("ephemeral container debugger" in e.message for e in events.items)

    await waiting.until(warned, timeout=30, what="the Failed event")
