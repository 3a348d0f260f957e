"""The ``microvm`` runtime for real: QEMU microvm guests booted by the shim, no mocks.

Each test writes a ``spec.json``, runs ``python -m vk_fargate.fleetd.shim <vm_dir>`` and
reads back what the shim published (status.json, CRI logs). The guest assets are built
once into the machine's cache (first run: one ~70 MB kernel download through apt).
Skipped only when ``qemu-system-x86_64`` is not installed; the network test also needs
root (tap devices, a bridge of its own on a free private /24, deleted afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import waiting
from vk_fargate import settings
from vk_fargate.devcluster import images as devimages
from vk_fargate.fleetd import crilog, guest, ocispec, sandbox
from vk_fargate.fleetd import network as fleetd_network
from vk_fargate.fleetd.runtimes import microvm

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None,
    reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
)

SHIM_TIMEOUT = 60  # seconds for a whole microVM life under TCG on 2 cores


@pytest.fixture(scope="module")
def assets() -> guest.Assets:
    return guest.ensure_assets(guest.default_cache())


@pytest.fixture(scope="module")
def layout() -> Path:
    """The local images (busybox, nginx) as one OCI layout, built once per machine."""
    return devimages.build(settings.load().cache)


def bundle(
    layout: Path,
    root: Path,
    name: str,
    argv: list[str] | None = None,
    image: str = "busybox",
    *,
    locked: bool = False,
    **env: str,
) -> sandbox.ShimContainer:
    """Container ``name`` as fleetd makes it ready: ``image`` unpacked by umoci into an
    OCI bundle under ``root``, its config made by ``ocispec`` (``argv`` over the
    image's command, ``env`` over the image's; ``locked``: uid 1000, a read-only root,
    every capability dropped and the RuntimeDefault seccomp filter)."""
    path = root / "bundles" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{image}", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    base = json.loads((path / "config.json").read_text())
    image_env = [tuple(e.split("=", 1)) for e in base["process"].get("env", [])]
    merged = [*(e for e in image_env if e[0] not in env), *env.items()]
    run = ocispec.Container(
        argv=argv or base["process"]["args"],
        env=[(k, v) for k, v in merged],
        cwd=base["process"].get("cwd") or "/",
        hostname=name,
        netns=None,
        cgroups_path=None,
        pod_files={},
        run_as=(1000, 1000) if locked else (None, None),
        read_only=locked,
        capabilities_drop=("ALL",) if locked else (),
        seccomp=locked,
    )
    (path / "config.json").write_text(json.dumps(ocispec.spec(base, run)))
    return {"name": name, "argv": run.argv, "env": env, "working_dir": None, "bundle": str(path)}


LOCKED_REPORT = (
    "echo uid=$(id -u); grep -E 'Seccomp:|CapEff:' /proc/self/status; touch /probe 2>&1; true"
)


def make_spec(vm_id: str, **overrides: Any) -> sandbox.ShimSpec:
    """A spec for ``vm_id`` made unique to this test run (its tap name derives from it)."""
    spec: dict[str, Any] = {
        "id": f"{vm_id}-{os.getpid()}",
        "runtime": "microvm",
        "vcpu_millis": 250,
        "mem_mib": 256,
        "restart_policy": "Never",
        "termination_grace_seconds": 30,
        "backoff_initial_seconds": 0.2,
        "backoff_max_seconds": 1.0,
        "init_containers": [],
        "containers": [],
        "netns": None,
        "cgroups": [],
        "network": None,
        "notify_socket": None,
    }
    spec.update(overrides)
    return spec  # type: ignore[return-value]


async def start_shim(vm_dir: Path, spec: sandbox.ShimSpec) -> asyncio.subprocess.Process:
    vm_dir.mkdir(parents=True, exist_ok=True)
    (vm_dir / "spec.json").write_text(json.dumps(spec))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vk_fargate.fleetd.shim",
        str(vm_dir),
        env={**os.environ, "VK_FARGATE_CACHE": str(guest.default_cache())},
    )


async def finish(shim: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(shim.wait(), SHIM_TIMEOUT)
    finally:
        if shim.returncode is None:
            shim.kill()
            await shim.wait()
    assert shim.returncode == 0


def status(vm_dir: Path) -> dict[str, Any]:
    return sandbox.read_json(vm_dir / "status.json") or {}


def records(vm_dir: Path, name: str, instance: int = 0) -> list[crilog.Record]:
    lines = sandbox.log_path(vm_dir, name, instance).read_text().splitlines()
    parsed = [crilog.parse(line) for line in lines]
    assert all(parsed), lines
    return [r for r in parsed if r is not None]


def qemu_running(vm_id: str) -> bool:
    """Whether any QEMU of this VM is alive (its ``-name vkf-<id>``)."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if f"vkf-{vm_id}".encode() in (proc / "cmdline").read_bytes():
                return True
    return False


async def test_containers_run_in_the_guest_and_report_exit_codes(
    assets: guest.Assets, layout: Path, tmp_path: Path
) -> None:
    setup = ["/bin/sh", "-c", "echo prepared; echo warn >&2"]
    spec = make_spec(
        "vm-e2e-exit",
        init_containers=[bundle(layout, tmp_path, "setup", setup)],
        containers=[
            bundle(layout, tmp_path, "app", ["sh", "-c", "echo hello from $NAME; exit 3"],
                   NAME="guest"),
            bundle(layout, tmp_path, "missing", ["/no/such/program"]),
            bundle(layout, tmp_path, "locked", ["sh", "-c", LOCKED_REPORT], locked=True),
        ],
    )  # fmt: skip
    await finish(await start_shim(tmp_path, spec))

    doc = status(tmp_path)
    assert (doc["phase"], doc["reason"]) == ("exited", "Error"), doc
    app, missing, locked = doc["containers"]
    assert (app["state"], app["exit_code"], app["reason"]) == ("terminated", 3, "Error")
    # runc's own words, as the process runtime reports them.
    assert (missing["state"], missing["reason"]) == ("terminated", "StartError"), missing
    assert "/no/such/program" in missing["message"], missing
    # The guest's runc applies the securityContext as the host's does.
    assert locked["exit_code"] == 0, locked
    report = [r.text for r in records(tmp_path, "locked")]
    assert (
        "uid=1000" in report and "Seccomp:\t2" in report and "CapEff:\t0000000000000000" in report
    )
    assert any("Read-only file system" in line for line in report), report
    assert doc["init_containers"][0]["exit_code"] == 0
    assert [(r.stream, r.full, r.text) for r in records(tmp_path, "app")] == [
        ("stdout", True, "hello from guest")
    ]
    assert {(r.stream, r.text) for r in records(tmp_path, "setup")} == {
        ("stdout", "prepared"),
        ("stderr", "warn"),
    }
    crilog.parse_timestamp(records(tmp_path, "app")[0].time)
    assert not qemu_running(spec["id"])


async def test_restarts_are_counted_and_logged_per_instance(
    assets: guest.Assets, layout: Path, tmp_path: Path
) -> None:
    # The container's root filesystem survives its restarts: fail twice, then succeed.
    script = (
        "n=$(($(cat /tmp/n 2>/dev/null || echo 0) + 1)); echo $n > /tmp/n; "
        "echo attempt $n; [ $n -ge 3 ]"
    )
    spec = make_spec(
        "vm-e2e-restart",
        restart_policy="OnFailure",
        containers=[bundle(layout, tmp_path, "flaky", ["/bin/sh", "-c", script])],
    )
    await finish(await start_shim(tmp_path, spec))

    doc = status(tmp_path)
    flaky = doc["containers"][0]
    assert (doc["phase"], doc["reason"]) == ("exited", "Completed"), doc
    assert (flaky["restart_count"], flaky["exit_code"]) == (2, 0)
    assert flaky["last_termination"]["exit_code"] == 1
    assert [r.text for r in records(tmp_path, "flaky", 2)] == ["attempt 3"]
    assert [r.text for r in records(tmp_path, "flaky", 1)] == ["attempt 2"]
    assert not sandbox.log_path(tmp_path, "flaky", 0).exists()  # only two instances kept


async def test_stop_gives_the_grace_period_then_ends_qemu(
    assets: guest.Assets, layout: Path, tmp_path: Path
) -> None:
    loop = "echo up; while :; do sleep 1; done"
    spec = make_spec(
        "vm-e2e-stop",
        containers=[
            bundle(layout, tmp_path, "polite",
                   ["/bin/sh", "-c", f"trap 'echo got TERM; exit 143' TERM; {loop}"]),
            bundle(layout, tmp_path, "stubborn", ["/bin/sh", "-c", f"trap '' TERM; {loop}"]),
        ],
    )  # fmt: skip
    shim = await start_shim(tmp_path, spec)

    def both_up() -> bool:
        paths = [sandbox.log_path(tmp_path, name, 0) for name in ("polite", "stubborn")]
        return all(path.exists() and " up" in path.read_text() for path in paths)

    await waiting.until(_async(both_up), timeout=SHIM_TIMEOUT, what="both containers up")
    (tmp_path / "stop.json").write_text(json.dumps({"grace_seconds": 3}))
    asked = time.monotonic()
    shim.send_signal(signal.SIGTERM)
    await finish(shim)
    took = time.monotonic() - asked

    doc = status(tmp_path)
    polite, stubborn = doc["containers"]
    assert (doc["phase"], doc["reason"]) == ("exited", "Stopped"), doc
    assert (polite["state"], polite["exit_code"]) == ("terminated", 143)
    assert (stubborn["state"], stubborn["exit_code"]) == ("terminated", 137)
    assert "got TERM" in [r.text for r in records(tmp_path, "polite")]
    # stop.json's 3 s grace, not the spec's 30 s, then a KILL.
    assert 3 <= took < 3 + microvm.STOP_MARGIN, took
    assert not qemu_running(spec["id"])


def _async(check: Any) -> Any:
    async def probe() -> bool:
        return bool(check())

    return probe


def free_subnet() -> ipaddress.IPv4Network:
    """A private /24 that overlaps no route of this machine."""
    out = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    kinds = ("local", "broadcast", "unreachable", "blackhole", "prohibit", "multicast", "anycast")
    taken = []
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in kinds:
            words = words[1:]
        with contextlib.suppress(ValueError, IndexError):  # "default" and the like
            taken.append(ipaddress.ip_network(words[0], strict=False))
    for third in range(213, 256):
        candidate = ipaddress.IPv4Network(f"10.213.{third}.0/24")
        if not any(candidate.overlaps(net) for net in taken if net.version == 4):
            return candidate
    pytest.fail("no free 10.213.x.0/24 for the test bridge")


@pytest.fixture
def bridge() -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    if os.geteuid() != 0:
        pytest.skip("the network test needs root (tap devices and a bridge)")
    name = f"vkftb{os.getpid() % 100000}"
    subnet = free_subnet()
    gateway = f"{subnet[1]}/{subnet.prefixlen}"
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", gateway, "dev", name], check=True)
        subprocess.run(["ip", "link", "set", "dev", name, "up"], check=True)
        yield name, subnet
    finally:
        subprocess.run(["ip", "link", "del", "dev", name], check=False)


async def ip(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(url, timeout=3) as response:
        return response.read().decode()  # type: ignore[no-any-return]


async def test_guest_serves_the_nginx_image_on_the_bridge(
    assets: guest.Assets, layout: Path, tmp_path: Path, bridge: tuple[str, ipaddress.IPv4Network]
) -> None:
    name, subnet = bridge
    guest_ip = str(subnet[2])
    spec = make_spec(
        "vm-e2e-net",
        network={
            "ip": guest_ip,
            "prefix_len": subnet.prefixlen,
            "gateway": str(subnet[1]),
            "bridge": name,
        },
        containers=[bundle(layout, tmp_path, "web", image="nginx")],  # the image's own Cmd
    )
    tap = microvm.tap_name(spec)
    _, route = await ip("route", "get", guest_ip)
    assert f"dev {name} " in route, f"{guest_ip} would not go through {name}: {route}"
    shim = await start_shim(tmp_path, spec)
    try:
        await waiting.until(
            _async(lambda: status(tmp_path).get("phase") == "running"),
            timeout=SHIM_TIMEOUT,
            what="the web container",
        )
        _, links = await ip("-o", "link", "show", "master", name)
        assert f" {tap}:" in links, links

        async def page() -> str | None:
            with contextlib.suppress(OSError):
                return await asyncio.to_thread(fetch, f"http://{guest_ip}/")
            return None

        served = await waiting.until(page, timeout=30, what="HTTP from the guest")
        # The page of the image's own files (Debian's welcome page), not the host's.
        assert "<title>Welcome to nginx!</title>" in served, served
        # The daemon's /stats reads the guest's traffic from this tap, by this name.
        assert tap == microvm.default_tap(spec["id"])
        counted = fleetd_network.counters(tap)
        assert counted is not None and counted["tx_bytes"] > 0 and counted["rx_bytes"] > 0
    finally:
        shim.send_signal(signal.SIGTERM)
        await finish(shim)
    doc = status(tmp_path)
    assert (doc["phase"], doc["reason"]) == ("exited", "Stopped"), doc
    assert doc["containers"][0]["exit_code"] == 0  # nginx's fast shutdown on TERM
    assert not qemu_running(spec["id"])
    code, _ = await ip("link", "show", "dev", tap)
    assert code != 0, "the tap device outlived the microVM"
