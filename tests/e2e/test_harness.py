"""The harness itself: parallel clusters, failures that name their step, no orphans,
and the `vk-fargate dev` commands users run."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from vk_fargate import errors
from vk_fargate.devcluster import binaries, cluster, processes

pytestmark = pytest.mark.e2e


async def _readyz(local: cluster.Cluster) -> str:
    pem = local.layout.pem
    context = ssl.create_default_context(cafile=str(pem("ca.crt")))
    context.load_cert_chain(pem("admin.crt"), pem("admin.key"))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{local.server}/readyz", ssl=context) as response,
    ):
        return await response.text()


async def test_second_cluster_runs_beside_the_first_and_leaves_nothing(
    control_plane_binaries: binaries.Binaries, local_cluster: cluster.Cluster
) -> None:
    second = cluster.Cluster(control_plane_binaries)
    assert second.ports != local_cluster.ports
    async with second:
        assert await _readyz(second) == "ok"
        assert await _readyz(local_cluster) == "ok"
        pids = [item.pid for item in second.running]
        root = second.layout.root
    assert len(pids) == 4
    assert not [pid for pid in pids if processes.alive(pid)]
    assert not root.exists()


async def test_failed_component_names_step_and_log_and_stops_the_rest(
    control_plane_binaries: binaries.Binaries, tmp_path: Path
) -> None:
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'E1127 cannot load etcd config: boom' >&2\nexit 1\n")
    broken.chmod(0o755)
    bins = dataclasses.replace(control_plane_binaries, kube_apiserver=broken)
    local = cluster.Cluster(bins)
    try:
        with pytest.raises(errors.HarnessError) as caught:
            await local.start()
        assert caught.value.step == "start kube-apiserver"
        assert caught.value.log == local.layout.log("kube-apiserver")
        assert caught.value.log.exists(), "the log the error names is kept"
        assert "boom" in str(caught.value)
        assert local.running == []
        etcd_log = local.layout.log("etcd")
        assert etcd_log.exists()
        assert not _processes_running(str(control_plane_binaries.etcd), local.layout.root)
    finally:
        shutil.rmtree(local.layout.root, ignore_errors=True)


def _processes_running(program: str, root: Path) -> list[int]:
    """PIDs running ``program`` with an argument under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].decode() == program and any(str(root).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VK_FARGATE_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "vk_fargate.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def test_dev_up_status_down(control_plane_binaries: binaries.Binaries, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    try:
        up = _cli(state_dir, "dev", "up")
        assert up.returncode == 0, up.stderr
        assert "starting kube-apiserver" in up.stdout
        assert f"export KUBECONFIG={state_dir}/dev/kubeconfig" in up.stdout

        again = _cli(state_dir, "dev", "up")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert "starting" not in again.stdout

        status = _cli(state_dir, "dev", "status", "--json")
        assert status.returncode == 0, status.stderr
        described = json.loads(status.stdout)
        assert described["kubeconfig"] == f"{state_dir}/dev/kubeconfig"
        assert set(described["components"]) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "fleetd",
            "provider",
        }
        fleet = described["fleet"]
        token = Path(fleet["token_file"]).read_text().strip()
        hosts = subprocess.run(
            ["curl", "-sf", f"{fleet['url']}/v1/hosts", "-H", f"Authorization: Bearer {token}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert len(json.loads(hosts.stdout)["items"]) == 2
        for component in described["components"].values():
            assert component["running"] is True
            assert Path(component["log"]).exists()
            assert component["url"].startswith(("http://127.0.0.1:", "https://127.0.0.1:"))
        pids = [c["pid"] for c in described["components"].values()]

        kubectl = subprocess.run(
            [
                str(binaries.kubectl_path()),
                "--kubeconfig",
                described["kubeconfig"],
                "get",
                "namespace",
                "default",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert kubectl.stdout.strip() == "namespace/default", kubectl.stderr

        demo = _cli(state_dir, "dev", "demo")
        assert demo.returncode == 0, demo.stderr
        for seen in (
            "schedulerName: fargate-scheduler",
            "eks.amazonaws.com/fargate-profile=fargate",
            "CapacityProvisioned: 0.25vCPU 0.5GB",
            "CapacityProvisioned: 2vCPU 4GB",
            "fg-pdb",
            "Pod not supported on Fargate: invalid SecurityContext fields: Privileged",
            '[✔]  created Fargate profile "fargate"',
        ):
            assert seen in demo.stdout, (seen, demo.stdout)
        assert "Running" in demo.stdout and "fargate-ip-" in demo.stdout, demo.stdout
        if os.geteuid() == 0:
            assert "<title>Welcome to nginx!</title>" in demo.stdout
    finally:
        down = _cli(state_dir, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped kube-apiserver" in down.stdout
    assert "stopped provider" in down.stdout and "stopped fleetd" in down.stdout
    assert not [pid for pid in pids if processes.alive(pid)]
    assert not (state_dir / "dev").exists()
    gone = _cli(state_dir, "dev", "status")
    assert gone.returncode == 1
    assert "no dev cluster" in gone.stderr
