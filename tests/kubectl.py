"""kubectl as the user runs it, against a test cluster: the one helper the tests share."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import yaml

from vk_fargate.devcluster import binaries


def run(kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    """``kubectl --kubeconfig kubeconfig args...``'s output; fails the test on an error."""
    done = subprocess.run(
        [str(binaries.kubectl_path()), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


async def run_async(
    kubeconfig: Path, *args: str, timeout: float = 30, stdin: bytes | None = None
) -> tuple[int, bytes, str]:
    """kubectl in a subprocess without blocking the event loop (a test whose loop serves
    what kubectl reaches): its exit code, output and error text."""
    kubectl = await asyncio.create_subprocess_exec(
        str(binaries.kubectl_path()),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(kubectl.communicate(stdin), timeout=timeout)
    assert kubectl.returncode is not None
    return kubectl.returncode, out, err.decode()


def token_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster, authenticated by ``token`` alone (no client
    certificate, which the API server would otherwise take first)."""
    config = yaml.safe_load(admin.read_text())
    [entry] = config["clusters"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [entry],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": entry["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    return path
