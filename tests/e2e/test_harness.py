"""The harness itself: parallel clusters, failures that name their step, no orphans,
and the `vk-fargate dev` commands users run (also with `--aws`: moto's server seeded)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests import vkcli
from vk_fargate import errors
from vk_fargate.aws import devaws, session
from vk_fargate.devcluster import binaries, cluster, coredns, processes

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


_cli = vkcli.run


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

        mismatch = _cli(state_dir, "dev", "up", "--aws")
        assert mismatch.returncode == 1
        assert "a dev cluster without AWS is running" in mismatch.stderr
        assert "vk-fargate dev down" in mismatch.stderr
        assert "starting" not in mismatch.stdout

        status = _cli(state_dir, "dev", "status", "--json")
        assert status.returncode == 0, status.stderr
        described = json.loads(status.stdout)
        assert described["kubeconfig"] == f"{state_dir}/dev/kubeconfig"
        assert set(described["components"]) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "registry",
            "fleetd",
            "provider",
        }
        host = described["registry"]["url"].removeprefix("http://")
        assert described["registry"]["images"] == [
            *(f"{host}/library/{n}" for n in ("busybox:latest", "busybox:nonroot", "nginx:latest")),
            f"{host}/coredns/coredns:{coredns.VERSION}",
        ]
        fleet = described["fleet"]
        token = Path(fleet["token_file"]).read_text().strip()
        hosts = subprocess.run(
            ["curl", "-sf", f"{fleet['url']}/v1/hosts", "-H", f"Authorization: Bearer {token}"],
            capture_output=True,
            text=True,
            timeout=60,
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
        usage = next(x for x in demo.stdout.splitlines() if " core-seconds used, " in x)
        assert re.match(r"pod simple-web-\S+: cpu \d+\.\d{3} core-seconds used, memory", usage)
        assert float(usage.split("memory working set ")[1].split("Mi")[0]) > 0, usage
        if os.geteuid() == 0:
            assert "<title>Welcome to nginx!</title>" in demo.stdout
        _coredns_runs_on_fargate(state_dir)
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


def _coredns_runs_on_fargate(state_dir: Path) -> None:
    """`dev up` deployed CoreDNS as EKS does and both replicas are Ready on Fargate nodes
    of their own: the kubernetes plugin synced through the `kubernetes` Service."""
    deadline = time.monotonic() + 120
    pods: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        status = _cli(state_dir, "dev", "status", "--json")
        assert status.returncode == 0, status.stderr
        dns = json.loads(status.stdout)["coredns"]
        pods = dns["pods"]
        if len(pods) == 2 and all(p["ready"] and p["phase"] == "Running" for p in pods):
            break
        time.sleep(2)
    else:
        raise AssertionError(f"CoreDNS not 2/2 Ready in 120 s: {pods}")
    assert (dns["image"], dns["service_ip"]) == (coredns.IMAGE, "10.96.0.10")
    nodes = {str(p["node"]) for p in pods}
    assert len(nodes) == 2 and all(n.startswith("fargate-ip-") for n in nodes), nodes
    shown = _cli(state_dir, "dev", "status")
    assert "coredns: 2/2 Ready" in shown.stdout, shown.stdout


def test_dev_up_aws_status_profile_demo_down(
    control_plane_binaries: binaries.Binaries, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    pids: list[int] = []
    try:
        up = _cli(state_dir, "dev", "up", "--aws")
        assert up.returncode == 0, up.stderr
        assert "starting the fake AWS" in up.stdout

        status = _cli(state_dir, "dev", "status", "--json")
        assert status.returncode == 0, status.stderr
        described = json.loads(status.stdout)
        pids = [c["pid"] for c in described["components"].values()]
        assert list(described["components"])[-3:] == ["aws", "fleetd", "provider"]
        assert described["components"]["aws"]["running"] is True
        world = described["aws"]
        assert set(world) == {
            "endpoint_url",
            "region",
            "vpc_id",
            "private_subnets",
            "public_subnets",
            "role_arn",
        }
        assert world["endpoint_url"].startswith("http://127.0.0.1:")
        assert described["components"]["aws"]["url"] == world["endpoint_url"]
        assert len(world["private_subnets"]) == 2 and len(world["public_subnets"]) == 1
        assert world["role_arn"].endswith(f":role/{devaws.ROLE_NAME}")

        settings = session.AwsSettings(
            enabled=True, region=world["region"], endpoint_url=world["endpoint_url"]
        )
        ec2 = session.make_client(settings, "ec2", credentials=("testing", "testing"))
        vpcs = ec2.describe_vpcs(VpcIds=[world["vpc_id"]])["Vpcs"]
        assert [v["CidrBlock"] for v in vpcs] == ["192.168.0.0/16"]
        subnets = ec2.describe_subnets(SubnetIds=world["private_subnets"])["Subnets"]
        assert len({s["AvailabilityZone"] for s in subnets}) == 2
        private = [ipaddress.ip_network(s["CidrBlock"]) for s in subnets]

        human = _cli(state_dir, "dev", "status")
        assert human.returncode == 0, human.stderr
        assert world["endpoint_url"] in human.stdout and world["vpc_id"] in human.stdout

        plain = _cli(state_dir, "dev", "up")
        assert plain.returncode == 0, plain.stderr
        assert "already running" in plain.stdout and "runs with AWS" in plain.stdout

        profile = ["profile", "--kubeconfig", described["kubeconfig"]]
        create = _cli(
            state_dir,
            *profile,
            "create",
            "--name",
            "fargate",
            "--namespace",
            "x",
            "--subnets",
            ",".join(world["private_subnets"]),
            "--pod-execution-role-arn",
            world["role_arn"],
        )
        assert create.returncode == 0, create.stderr
        assert '[✔]  created Fargate profile "fargate"' in create.stdout, create.stdout
        listed = _cli(state_dir, *profile, "get", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        views = {v["name"]: v for v in json.loads(listed.stdout)}
        assert set(views) == {"coredns", "fargate"}  # dev up's own, for CoreDNS
        view = views["fargate"]
        assert view["status"] == "ACTIVE"
        assert view["subnets"] == world["private_subnets"]
        assert view["podExecutionRoleARN"] == world["role_arn"]
        deleted = _cli(state_dir, *profile, "delete", "--name", "fargate")
        assert deleted.returncode == 0, deleted.stderr

        demo = _cli(state_dir, "dev", "demo")
        assert demo.returncode == 0, demo.stderr
        assert f"--subnets {','.join(world['private_subnets'])}" in demo.stdout, demo.stdout
        assert "CapacityProvisioned: 0.25vCPU 0.5GB" in demo.stdout, demo.stdout
        line = next(x for x in demo.stdout.splitlines() if x.startswith("pod IP "))
        ip = ipaddress.ip_address(line.split()[2])
        assert any(ip in net for net in private), line
        assert "is its ENI's, in private subnet subnet-" in line
        assert f"fargate-ip-{str(ip).replace('.', '-')}." in demo.stdout, demo.stdout
    finally:
        down = _cli(state_dir, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped aws" in down.stdout and "stopped provider" in down.stdout
    assert pids and not [pid for pid in pids if processes.alive(pid)]
    assert not (state_dir / "dev").exists()
