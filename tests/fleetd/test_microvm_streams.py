"""Exec and port sessions into a real QEMU microVM through its guest agent: fleetd boots
the VM from a real image, ``agentmux`` speaks to the agent over the VM's virtio-serial
socket, and runc inside the guest runs the commands. One VM serves every test of the
module (a boot under TCG is slow); the fleetd endpoints come with the daemon's wiring."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client
from vk_fargate.fleetd import agentmux, sandbox, streams

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    ),
]
log = logging.getLogger(__name__)
BOOT = 240  # seconds for a pull, a first build of the agent, a TCG boot and the start
HOSTS = [{"id": "metal-vm-a", "zone": devfleet.ZONES[0], "vcpus": 4, "mem_mib": 8192}]
BIG = 8 * 1024 * 1024  # bytes of the file the VM's httpd serves for the throughput log
SERVER = (
    "mkdir -p /tmp/www && echo -n served > /tmp/www/index.html"
    f" && head -c {BIG} /dev/zero > /tmp/www/big && exec httpd -f -p 8080 -h /tmp/www"
)

Vm = tuple[Path, sandbox.ShimSpec]


@pytest.fixture(scope="module")
async def vm(
    tmp_path_factory: pytest.TempPathFactory, registry: devregistry.Registry
) -> AsyncIterator[Vm]:
    root = tmp_path_factory.mktemp("streams")
    hosts = [{**h, "runtime": "microvm"} for h in HOSTS]
    fleet = await devfleet.start(root / "fleet", hosts=hosts, registry=registry.host)
    try:
        async with client.FleetClient(fleet.url, fleet.token) as api:
            vm_id = helpers.new_id()
            # One whole vCPU: the host's cgroup gives the emulated guest that much time.
            spec = helpers.spec(helpers.shell("web", SERVER), vcpu_millis=1000, mem_mib=2048)
            await api.put_microvm(vm_id, spec)
            await helpers.until_vm(
                api, vm_id, lambda v: helpers.container(v, "web").state == "running", timeout=BOOT
            )
            vm_dir = root / "fleet" / "state" / "microvms" / vm_id
            yield vm_dir, sandbox.read_json(vm_dir / "spec.json")
    finally:
        fleet.stop()


async def run(
    vm: Vm, command: list[str], stdin: bytes | None = None, *, tty: bool = False
) -> tuple[bytes, bytes, dict[str, object]]:
    """stdout, stderr and the ERROR channel's document of one exec."""
    session = await agentmux.open_exec(*vm, "web", command, stdin=stdin is not None, tty=tty)
    try:
        if stdin is not None:
            await session.send(streams.STDIN, stdin)
            await session.send(streams.CLOSE, bytes((streams.STDIN,)))
        out, err, end = bytearray(), bytearray(), {}
        async with asyncio.timeout(120):
            async for channel, payload in session.receive():
                if channel == streams.STDOUT:
                    out += payload
                elif channel == streams.STDERR:
                    err += payload
                elif channel == streams.ERROR:
                    end = json.loads(payload)
        return bytes(out), bytes(err), end
    finally:
        await session.close()


async def test_exec_runs_in_the_container_and_reports_the_exit_code(vm: Vm) -> None:
    out, err, end = await run(vm, ["id"])
    assert out.startswith(b"uid=0(root)"), (out, err, end)
    assert end == {"exit_code": 0}
    out, _, end = await run(vm, ["cat", "/etc/hostname"])
    assert out.decode().strip() == vm[1]["id"][:63]  # the pod's hostname, not the host's
    out, err, end = await run(vm, ["sh", "-c", "echo oops >&2; exit 3"])
    assert (out, err, end) == (b"", b"oops\n", {"exit_code": 3})


async def test_stdin_reaches_the_command_whole(vm: Vm) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: several windows of flow control
    out, _, end = await run(vm, ["wc", "-c"], data)
    assert out.decode().strip() == str(len(data))
    assert end == {"exit_code": 0}


async def test_a_missing_command_is_an_error_not_an_exit(vm: Vm) -> None:
    out, err, end = await run(vm, ["no-such-command"])
    assert "exit_code" not in end, end
    assert "no-such-command" in str(end["error"]), end
    assert out == err == b"", (out, err)  # runc's message is the error, not output


async def test_a_tty_session_follows_resizes(vm: Vm) -> None:
    session = await agentmux.open_exec(*vm, "web", ["sh"], stdin=True, tty=True)
    screen = bytearray()
    items: list[tuple[int, bytes]] = []

    async def read() -> None:
        async for channel, payload in session.receive():
            items.append((channel, payload))
            if channel == streams.STDOUT:  # a TTY: all output on one channel
                screen.extend(payload)

    reader = asyncio.create_task(read(), name="tty-reader")
    try:
        for rows, cols in ((30, 100), (41, 132)):
            await session.send(streams.RESIZE, json.dumps({"Width": cols, "Height": rows}).encode())
            want = f"\n{rows} {cols}\r\n".encode()

            async def seen(want: bytes = want) -> bool:
                return want in screen

            for _ in range(10):  # the resize and the command race inside runc: ask again
                await session.send(streams.STDIN, b"stty size\n")
                with contextlib.suppress(AssertionError):
                    await waiting.until(seen, timeout=20, what="stty size")
                    break
            assert want in screen, bytes(screen[-300:])
        await session.send(streams.STDIN, b"exit 7\n")
        async with asyncio.timeout(60):
            await reader
        assert {c for c, _ in items} <= {streams.STDOUT, streams.ERROR}, items
        assert items[-1][0] == streams.ERROR, items[-3:]
        assert json.loads(items[-1][1]) == {"exit_code": 7}
    finally:
        reader.cancel()
        await session.close()


async def test_closing_a_session_kills_its_command(vm: Vm) -> None:
    session = await agentmux.open_exec(*vm, "web", ["sleep", "1017"], stdin=False, tty=False)

    async def sleeping() -> bool:
        out, _, _ = await run(vm, ["ps"])
        return b"sleep 1017" in out

    await waiting.until(sleeping, timeout=60, what="the exec'd sleep in ps")
    await session.close()
    await session.close()  # twice is fine

    async def gone() -> bool:
        return not await sleeping()

    await waiting.until(gone, timeout=60, what="the sleep killed by the close")


async def test_a_new_host_connection_drops_the_old_sessions(vm: Vm) -> None:
    """As after a restart of fleetd: the agent sees its host go away, kills that host's
    sessions and serves the next connection."""
    session = await agentmux.open_exec(*vm, "web", ["sleep", "1018"], stdin=False, tty=False)

    async def sleeping() -> bool:
        out, _, _ = await run(vm, ["ps"])
        return b"sleep 1018" in out

    await waiting.until(sleeping, timeout=60, what="the exec'd sleep in ps")
    await agentmux.disconnect(vm[0])
    got = [item async for item in session.receive()]
    assert [c for c, _ in got] == [streams.ERROR], got

    async def gone() -> bool:
        return not await sleeping()

    await waiting.until(gone, timeout=60, what="the old connection's sleep killed")


async def test_a_port_stream_reaches_a_server_in_the_vm(vm: Vm) -> None:
    body = await fetch(vm, "/index.html")
    assert body.endswith(b"\r\n\r\nserved"), body[-200:]
    started = time.monotonic()
    big = await fetch(vm, "/big")
    seconds = time.monotonic() - started
    assert big.endswith(b"\0" * 1024) and len(big) > BIG
    log.warning(
        "port stream: %d MiB in %.2fs, %.1f MiB/s", BIG >> 20, seconds, BIG / 2**20 / seconds
    )


async def fetch(vm: Vm, path: str) -> bytes:
    session = await agentmux.open_port(*vm, 8080)
    try:
        await session.send(streams.STDIN, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        await session.send(streams.CLOSE, bytes((streams.STDIN,)))
        got = bytearray()
        async with asyncio.timeout(120):
            async for channel, payload in session.receive():
                if channel == streams.STDOUT:
                    got += payload
                elif channel == streams.CLOSE:
                    assert payload == b"\x01"
                    break
                else:
                    pytest.fail(f"unexpected {channel}: {payload!r}")
        return bytes(got)
    finally:
        await session.close()


async def test_a_refused_port_is_an_error(vm: Vm) -> None:
    session = await agentmux.open_port(*vm, 8081)
    try:
        items = [item async for item in session.receive()]
    finally:
        await session.close()
    assert len(items) == 1 and items[0][0] == streams.ERROR, items
    assert "connection refused" in json.loads(items[0][1])["error"]


async def test_exec_round_trips(vm: Vm) -> None:
    """Logs the p50 of 50 ``true`` execs (no timed assertion: the machine is shared)."""
    seconds = []
    for _ in range(50):
        started = time.monotonic()
        _, _, end = await run(vm, ["true"])
        seconds.append(time.monotonic() - started)
        assert end == {"exit_code": 0}
    log.warning("exec round trip of true: p50 %.0f ms", statistics.median(seconds) * 1000)


async def test_a_vm_without_an_agent_socket_is_unavailable(vm: Vm, tmp_path: Path) -> None:
    with pytest.raises(agentmux.AgentUnavailable, match="no guest agent"):
        await agentmux.open_exec(tmp_path, vm[1], "web", ["true"], stdin=False, tty=False)
    with pytest.raises(LookupError):
        await agentmux.open_exec(*vm, "nope", ["true"], stdin=False, tty=False)
