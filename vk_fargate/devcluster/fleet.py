"""A fleetd for the local cluster and the tests: its config, process and token.

The generated config has two hosts in two zones with a private /24 each, picked so it
overlaps no route of this machine (checked against ``ip route``), a short restart
back-off, and the registries containers' images come from (the local registry as
docker.io's and registry.k8s.io's mirror: the local CoreDNS image goes by upstream's
name). fleetd runs with ``--stop-on-exit``, so stopping it removes every microVM,
namespace and bridge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import random
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from vk_fargate import pki
from vk_fargate.devcluster import components, processes
from vk_fargate.devcluster import registry as devregistry

ZONES = ("eu-central-1a", "eu-central-1b")


def _routes() -> list[ipaddress.IPv4Network]:
    try:
        out = subprocess.run(
            ["ip", "-j", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout
    except FileNotFoundError:
        return []
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network):
            nets.append(net)
    return nets


def free_subnets(count: int, *, seed: int | None = None) -> list[ipaddress.IPv4Network]:
    """``count`` /24s of 192.168.0.0/16 that overlap no route of this machine."""
    taken = _routes()
    pick = random.Random(seed)
    candidates = [ipaddress.IPv4Network(f"192.168.{n}.0/24") for n in range(16, 255)]
    pick.shuffle(candidates)
    free = [c for c in candidates if not any(c.overlaps(t) for t in taken)]
    if len(free) < count:
        raise RuntimeError("no free private /24 left in 192.168.0.0/16 on this machine")
    return free[:count]


@dataclasses.dataclass
class Fleet:
    """A running fleetd."""

    url: str
    token: str
    token_file: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes]

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "token_file": str(self.token_file),
            "pid": self.process.pid,
            "log": str(self.log),
            "config": str(self.config),
        }

    def stop(self) -> None:
        processes.stop(self.process.pid, grace=60, child=self.process)


def write_config(
    root: Path,
    *,
    port: int,
    hosts: list[dict[str, Any]] | None = None,
    backoff: tuple[float, float] = (0.5, 5.0),
    subnets: list[dict[str, str]] | None = None,
    registry: str | None = None,
    private_registries: tuple[str, ...] = (),
    image_budget_mib: int | None = None,
    tls: pki.KeyPair | None = None,
) -> Path:
    """A fleet.yaml under ``root`` for a one-machine fleet on loopback ``port``, served
    over TLS with ``tls`` (a certificate for 127.0.0.1 and its key, written beside it).

    With ``registry`` (host:port of a plain-HTTP registry) containers run from their
    images, pulled from there for docker.io and registry.k8s.io (a mirror) and for the
    registry itself;
    ``private_registries`` are reachable by their own names too.

    ``subnets`` (id, cidr, zone) mirror a VPC's private subnets when pods get ENIs;
    by default two free /24s are picked.
    """
    free = free_subnets(len(ZONES))
    suffix = secrets.token_hex(3)
    document: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "token_file": str(root / "token"),
        "state_dir": str(root / "state"),
        "subnets": subnets
        or [
            {"id": f"subnet-private{i + 1}-{suffix}", "cidr": str(net), "zone": zone}
            for i, (net, zone) in enumerate(zip(free, ZONES, strict=True))
        ],
        "hosts": hosts
        or [
            {"id": f"metal-{zone[-1]}", "zone": zone, "vcpus": 64, "mem_mib": 262144}
            for zone in ZONES
        ],
        "restart_backoff": {"initial_seconds": backoff[0], "max_seconds": backoff[1]},
    }
    if registry is not None:
        mirror = {"mirror": f"http://{registry}"}
        document["registries"] = {
            "docker.io": mirror,
            "registry.k8s.io": mirror,
            registry: mirror,
            **{host: {"mirror": f"http://{host}"} for host in private_registries},
        }
    if image_budget_mib is not None:
        document["image_budget_mib"] = image_budget_mib
    root.mkdir(parents=True, exist_ok=True)
    if tls is not None:
        document["tls"] = {"cert_file": str(root / "tls.crt"), "key_file": str(root / "tls.key")}
        (root / "tls.crt").write_bytes(tls.cert)
        (root / "tls.key").touch(mode=0o600)
        (root / "tls.key").write_bytes(tls.key)
    path = root / "fleet.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def start(
    root: Path, *, config: Path | None = None, detach: bool = False, **options: Any
) -> Fleet:
    """Start fleetd with ``config`` (or a generated one) and wait for /healthz."""
    port = processes.free_ports(1)[0]
    if config is None:
        config = write_config(root, port=port, **options)
    document = yaml.safe_load(config.read_text())
    port = int(document["listen"].rpartition(":")[2])
    url = f"{'https' if document.get('tls') else 'http'}://127.0.0.1:{port}"
    token_file = root / "token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(24) + "\n")
        token_file.chmod(0o600)
    log = root / "fleetd.log"
    command = components.Command(
        "fleetd",
        (
            sys.executable,
            "-m",
            "vk_fargate.cli",
            "fleetd",
            "--config",
            str(config),
            "--stop-on-exit",
        ),
        f"{url}/healthz",
        log,
    )
    process = processes.spawn(command, detach=detach)
    try:
        await processes.wait_healthy(process, command, ssl_context=False, timeout=30)
    except BaseException:
        processes.stop(process.pid, grace=10, child=process)
        raise
    return Fleet(url, token_file.read_text().strip(), token_file, config, log, process)


@contextlib.asynccontextmanager
async def with_images(root: Path, cache: Path, **options: Any) -> AsyncIterator[Fleet]:
    """A fleetd (``start``'s options) and a registry of the local images it pulls from,
    both stopped on leaving: what a benchmark needs to run containers."""
    registry = await devregistry.start_filled(root / "registry", cache)
    try:
        fleet = await start(root / "fleet", registry=registry.host, **options)
        try:
            yield fleet
        finally:
            fleet.stop()
    finally:
        registry.stop()
