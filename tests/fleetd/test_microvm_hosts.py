"""A fleet whose hosts run QEMU microVMs, end to end through fleetd's API: the image is
pulled from the real registry, its root filesystem reaches the guest, and runc inside
the guest runs it. What the pod serves and sees comes from the image, never the host."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    ),
]
BOOT = 180  # seconds for a pull, a boot under TCG and the container's start, on 2 busy cores
HOSTS = [
    {"id": f"metal-vm-{zone[-1]}", "zone": zone, "vcpus": 4, "mem_mib": 8192, "runtime": "microvm"}
    for zone in devfleet.ZONES
]


@pytest.fixture
async def api(tmp_path: Path, registry: devregistry.Registry) -> AsyncIterator[client.FleetClient]:
    fleet = await devfleet.start(tmp_path / "fleet", hosts=HOSTS, registry=registry.host)
    try:
        async with client.FleetClient(fleet.url, fleet.token) as fleet_api:
            yield fleet_api
    finally:
        fleet.stop()


async def test_a_microvm_serves_the_nginx_image_over_its_tap(api: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    await api.put_microvm(vm_id, helpers.spec({"name": "web", "image": "nginx"}))
    vm = await helpers.until_vm(
        api, vm_id, lambda v: helpers.container(v, "web").state == "running", timeout=BOOT
    )
    web = helpers.container(vm, "web")
    assert web.image_id is not None and web.image_id.startswith("docker.io/library/nginx@sha256:")
    ip = vm.status.private_ip
    assert ip is not None and helpers.route_via_bridge(ip), f"{ip} is not on fleetd's bridge"

    async def page() -> str | None:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--max-time", "3", f"http://{ip}/", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out.decode() if proc.returncode == 0 else None

    served = await waiting.until(page, timeout=60, what="nginx's page from the guest")
    assert "<title>Welcome to nginx!</title>" in served, served

    # fleetd's exec and port endpoints reach the guest through its agent.
    command = ["sh", "-c", "echo in-$((1 + 2)); exit 3"]
    out, end = await _drain(await api.open_exec(vm_id, "web", command, stdin=False, tty=False))
    assert (out, end) == (b"in-3\n", b'{"exit_code": 3}')
    port = await api.open_port(vm_id, 80)
    await port.send(b"\x00GET / HTTP/1.0\r\n\r\n")
    out, end = await _drain(port)
    assert b"<title>Welcome to nginx!</title>" in out


async def _drain(stream: client.WebSocketStream) -> tuple[bytes, bytes]:
    """A session's stdout, and its ERROR message (or the pod's half-close)."""
    out = b""
    try:
        async with asyncio.timeout(60):
            while (message := await stream.receive()) is not None:
                if message[:1] == b"\x01":
                    out += message[1:]
                elif message[:1] in (b"\x03", b"\xff"):
                    return out, message[1:]
    finally:
        await stream.close()
    return out, b""


async def test_a_microvm_pod_sees_its_image_not_the_host(
    api: client.FleetClient, tmp_path: Path
) -> None:
    marker = tmp_path / "host-secret"
    marker.write_text("the host's secret\n")
    state_dir = tmp_path / "fleet" / "state"
    script = (
        f"cat {marker} || echo no-marker; ls {state_dir} || echo no-state; "
        "id -u; cat /etc/hostname; echo end; sleep 300"
    )
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("look", script), labels={"pod": "looker"})
    await api.put_microvm(vm_id, spec)
    await helpers.until_vm(
        api, vm_id, lambda v: helpers.container(v, "look").state == "running", timeout=BOOT
    )

    async def output() -> list[str] | None:
        text = b"".join([chunk async for chunk in api.logs(vm_id, "look")]).decode()
        lines = text.splitlines()
        return lines if "end" in lines else None

    lines = await waiting.until(output, timeout=60, what="the container's output")
    assert "the host's secret" not in lines
    assert "no-marker" in lines and "no-state" in lines, lines
    assert lines[-3:] == ["0", "looker", "end"], lines  # the image's root; the pod's name


@pytest.mark.parametrize(
    "field",
    [
        {"readiness_probe": {"tcp_socket": {"port": 80}}},
        {"pre_stop": {"sleep": {"seconds": 1}}},
        {"stdin": True, "tty": True},
    ],
)
async def test_a_spec_with_probes_or_hooks_is_refused_where_no_host_runs_them(
    api: client.FleetClient, field: dict[str, Any]
) -> None:
    """The guest runs no probes nor hooks yet: rather than ignore them, the fleet says so."""
    spec = helpers.spec(helpers.shell("app", "sleep 300", **field))
    with pytest.raises(errors.InvalidSpec, match="run on process hosts only"):
        await api.put_microvm(helpers.new_id(), spec)


async def test_a_spec_with_a_sidecar_is_refused_where_no_host_runs_them(
    api: client.FleetClient,
) -> None:
    """The guest does not order sidecars yet: rather than run them as app containers,
    the fleet says so."""
    side = {"image": "busybox", **helpers.shell("logs", "sleep 300"), "restart_policy": "Always"}
    spec = helpers.spec(helpers.shell("app", "sleep 300"), init_containers=[side])
    with pytest.raises(errors.InvalidSpec, match="sidecars run on process hosts only"):
        await api.put_microvm(helpers.new_id(), spec)
