"""Exec and port sessions through the real fleetd, runc and busybox: what ``kubectl
exec`` and ``kubectl port-forward`` will carry, via the fleet client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests import waiting
from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client
from vk_fargate.fleetd import config, streams

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runc and namespaces need root")

PAGE = "hello from the pod"
SERVER = f"mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && httpd -p 8080 -h /tmp/www; "


class Result:
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.end: dict[str, Any] = {}


async def _read(ws: aiohttp.ClientWebSocketResponse, result: Result) -> Result:
    async for message in ws:
        assert message.type == aiohttp.WSMsgType.BINARY, message
        channel, payload = streams.unframe(message.data)
        if channel == streams.STDOUT:
            result.out += payload
        elif channel == streams.STDERR:
            result.err += payload
        elif channel == streams.ERROR:
            result.end = json.loads(payload)
    return result


async def run(
    fleet: client.FleetClient,
    vm_id: str,
    command: list[str],
    *,
    stdin: bytes | None = None,
    tty: bool = False,
    before: list[bytes] = (),  # type: ignore[assignment]
) -> Result:
    """Run ``command`` in container ``app``; its output and its ERROR's JSON."""
    async with fleet.exec(vm_id, "app", command, stdin=stdin is not None, tty=tty) as ws:
        for message in before:
            await ws.send_bytes(message)

        async def feed() -> None:
            assert stdin is not None
            for at in range(0, len(stdin), 32 * 1024):
                await ws.send_bytes(streams.frame(streams.STDIN, stdin[at : at + 32 * 1024]))
            await ws.send_bytes(streams.frame(streams.CLOSE, bytes((streams.STDIN,))))

        feeding = asyncio.create_task(feed(), name="feed-stdin") if stdin is not None else None
        async with asyncio.timeout(60):
            result = await _read(ws, Result())
        if feeding is not None:
            await feeding
    return result


@pytest.fixture(scope="module")
async def pod(fleet: devfleet.Fleet) -> AsyncIterator[str]:
    """A running microVM: container ``app`` (user 1234, env GREETING) serving PAGE on 8080."""
    async with client.FleetClient(fleet.url, fleet.token) as api:
        vm_id = helpers.new_id()
        app = helpers.shell(
            "app",
            SERVER + "exec sleep 100000",
            env=[{"name": "GREETING", "value": "hi there"}],
            security={"run_as_user": 1234, "run_as_group": 5678},
        )
        await api.put_microvm(vm_id, helpers.spec(app))
        await helpers.until_vm(
            api,
            vm_id,
            lambda v: (
                v.status.state == "running" and helpers.container(v, "app").state == "running"
            ),
            timeout=60,
        )
        try:
            yield vm_id
        finally:
            await api.delete_microvm(vm_id, grace_seconds=0)


async def test_exec_runs_as_the_container_with_its_env_and_hostname(
    fleet_client: client.FleetClient, pod: str
) -> None:
    who = await run(fleet_client, pod, ["id"])
    assert who.out.decode().startswith("uid=1234 gid=5678"), who.out
    assert who.end == {"exit_code": 0}
    env = await run(fleet_client, pod, ["env"])
    assert "GREETING=hi there" in env.out.decode().splitlines()
    name = await run(fleet_client, pod, ["cat", "/etc/hostname"])
    assert name.end == {"exit_code": 0}
    assert name.out.strip(), "the container's hostname file is read"
    split = await run(fleet_client, pod, ["sh", "-c", "echo out; echo err >&2"])
    assert (split.out, split.err) == (b"out\n", b"err\n")


async def test_a_mebibyte_of_stdin_comes_through_exactly(
    fleet_client: client.FleetClient, pod: str
) -> None:
    data = os.urandom(2**20)
    counted = await run(fleet_client, pod, ["wc", "-c"], stdin=data)
    assert counted.out.strip() == str(2**20).encode()
    assert counted.end == {"exit_code": 0}
    echoed = await run(fleet_client, pod, ["cat"], stdin=data)
    assert echoed.out == data


async def test_the_exit_code_and_a_missing_command(
    fleet_client: client.FleetClient, pod: str
) -> None:
    assert (await run(fleet_client, pod, ["sh", "-c", "exit 3"])).end == {"exit_code": 3}
    missing = await run(fleet_client, pod, ["nosuch"])
    assert missing.end.keys() == {"error"}
    assert 'exec: "nosuch": executable file not found in $PATH' in missing.end["error"]
    assert missing.err == b""


async def test_a_background_child_with_its_own_output_does_not_hold_the_session(
    fleet_client: client.FleetClient, pod: str
) -> None:
    """The session ends when the command has ended and its output is closed, as
    containerd's: a child left running with output of its own does not hold it."""
    ended = await run(fleet_client, pod, ["sh", "-c", "sleep 999 >/dev/null 2>&1 & echo started"])
    assert ended.out == b"started\n"
    assert ended.end == {"exit_code": 0}


async def test_a_tty_session_with_a_resize(fleet_client: client.FleetClient, pod: str) -> None:
    tty = await run(fleet_client, pod, ["tty"], tty=True)
    assert tty.out.decode().strip().startswith("/dev/pts/"), tty.out
    size = json.dumps({"Width": 123, "Height": 45}).encode()
    # The first resize comes before the command starts: it starts at that size.
    first = streams.frame(streams.RESIZE, size)
    sized = await run(fleet_client, pod, ["stty", "size"], tty=True, before=[first])
    assert sized.out.decode().split() == ["45", "123"], sized.out
    # A later one reaches the running command's terminal (runc gets SIGWINCH).
    later = streams.frame(streams.RESIZE, json.dumps({"Width": 99, "Height": 33}).encode())
    # runc resizes the command's terminal on its SIGWINCH, a moment after the resize:
    # asked again until it shows (what a user sees at a real terminal too).
    script = "echo ready; while read line; do stty size; done"
    async with fleet_client.exec(pod, "app", ["sh", "-c", script], stdin=True, tty=True) as ws:
        await ws.send_bytes(first)
        seen = b""
        async with asyncio.timeout(30):
            while b"ready" not in seen:
                seen += streams.unframe(await ws.receive_bytes())[1]
            await ws.send_bytes(later)
            while b"33 99" not in seen:
                await ws.send_bytes(streams.frame(streams.STDIN, b"go\r"))
                seen += streams.unframe(await ws.receive_bytes())[1]
    seen = b""
    async with (
        fleet_client.exec(pod, "app", ["sh"], stdin=True, tty=True) as ws,
        _telling(lambda: seen),
    ):
        async with asyncio.timeout(30):
            # Typed at the prompt, as at a keyboard: typeahead sent before the shell has
            # set its terminal up may be flushed by it (TCSAFLUSH), on any kubelet.
            while b"/ $ " not in seen:
                seen += streams.unframe(await ws.receive_bytes())[1]
            await ws.send_bytes(streams.frame(streams.STDIN, b"echo $((6*7))\n"))
            # The answer, then the next prompt. runc clears ONLCR on the container's
            # console once it has it, racing the command's start: a shell that saw it
            # set first keeps it, and its lines end "\r\r\n" (the same on a screen).
            while b"42\r\n/ $ " not in seen.replace(b"\r\r\n", b"\r\n"):
                channel, payload = streams.unframe(await ws.receive_bytes())
                assert channel == streams.STDOUT
                seen += payload
            # CLOSE on a terminal is its EOF (^D): the shell ends as at a keyboard.
            await ws.send_bytes(streams.frame(streams.CLOSE, bytes((streams.STDIN,))))
            ended = await _read(ws, Result())
    assert ended.end == {"exit_code": 0}


@contextlib.asynccontextmanager
async def _telling(seen: Callable[[], bytes]) -> AsyncIterator[None]:
    """A timeout inside says what the terminal showed by then."""
    try:
        yield
    except TimeoutError:
        raise AssertionError(f"the terminal showed {seen()!r}") from None


async def test_closing_the_session_kills_the_command(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient, pod: str
) -> None:
    vm = await fleet_client.get_microvm(pod)
    instance = (helpers.container(vm, "app").container_id or "").removeprefix("vkfargate://")
    runc_root = Path(yaml.safe_load(fleet.config.read_text())["state_dir"]) / "runc"

    async def sleepers() -> list[str]:
        """The container's processes running ``sleep 1000`` (``runc ps``)."""
        proc = await asyncio.create_subprocess_exec(
            "runc", "--root", str(runc_root), "ps", "--format", "json", instance,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        found = []
        for pid in json.loads(out or b"[]") or []:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00":
                    found.append(str(pid))
        return found

    async def gone() -> bool:
        return not await sleepers()

    async with fleet_client.exec(pod, "app", ["sleep", "1000"], stdin=False, tty=False):
        await waiting.until(sleepers, timeout=20, what="the exec's sleep to run")
    await waiting.until(gone, timeout=20, what="the exec's sleep to be killed")

    # A client that vanishes without a close frame (its connection cut) is no different.
    async with fleet_client.exec(pod, "app", ["sleep", "1000"], stdin=False, tty=False) as ws:
        await waiting.until(sleepers, timeout=20, what="the exec's sleep to run")
        ws._writer.transport.abort()  # type: ignore[attr-defined]  # the TCP connection drops
        await waiting.until(gone, timeout=20, what="the vanished client's sleep to be killed")


async def test_a_port_stream_reaches_a_server_in_the_pod(
    fleet_client: client.FleetClient, pod: str
) -> None:
    async with fleet_client.port(pod, 8080) as ws:
        request = b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n"
        await ws.send_bytes(streams.frame(streams.STDIN, request))
        await ws.send_bytes(streams.frame(streams.CLOSE, bytes((streams.STDIN,))))
        received, closed = b"", False
        async with asyncio.timeout(30):
            async for message in ws:
                channel, payload = streams.unframe(message.data)
                if channel == streams.STDOUT:
                    received += payload
                elif channel == streams.CLOSE:
                    closed = payload == bytes((streams.STDOUT,))
    assert received.startswith(b"HTTP/1.1 200 OK"), received
    assert PAGE.encode() in received
    assert closed, "the server's end of writing came as [255, 1]"


async def test_a_closed_port_gives_the_dial_error(
    fleet_client: client.FleetClient, pod: str
) -> None:
    async with fleet_client.port(pod, 8081) as ws:
        result = await _read(ws, Result())
    assert result.end == {"error": "dial tcp4 127.0.0.1:8081: connect: connection refused"}


async def test_refusals_before_the_upgrade(fleet_client: client.FleetClient, pod: str) -> None:
    with pytest.raises(errors.NotFound):
        async with fleet_client.exec(helpers.new_id(), "app", ["true"], stdin=False, tty=False):
            pass
    with pytest.raises(errors.NotFound, match="container nope is not in microVM"):
        async with fleet_client.exec(pod, "nope", ["true"], stdin=False, tty=False):
            pass
    with pytest.raises(errors.BadRequest, match="command is required"):
        async with fleet_client.exec(pod, "app", [], stdin=False, tty=False):
            pass
    with pytest.raises(errors.BadRequest, match="port must be"):
        async with fleet_client.port(pod, 70000):
            pass


async def test_only_a_websocket_with_the_subprotocol_is_served(
    fleet: devfleet.Fleet, pod: str
) -> None:
    auth = {"Authorization": f"Bearer {fleet.token}"}
    path = f"/v1/microvms/{pod}/containers/app/exec?command=true"
    async with aiohttp.ClientSession(fleet.url) as http:
        async with http.get(path, headers=auth) as plain:
            assert plain.status == 400
            assert (await plain.json())["code"] == "BadRequest"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(path, headers=auth, protocols=("v4.channel.k8s.io",))
        assert refused.value.status == 400
        with pytest.raises(aiohttp.WSServerHandshakeError) as unauthorized:
            await http.ws_connect(path, protocols=(streams.SUBPROTOCOL,))
        assert unauthorized.value.status == 401


async def test_a_container_that_ended_is_a_conflict(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(
        helpers.shell("app", "exec sleep 100000"),
        helpers.shell("done", "true"),
        restart_policy="Never",
    )
    await fleet_client.put_microvm(vm_id, spec)
    try:
        await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: (
                helpers.container(v, "done").state == "terminated"
                and helpers.container(v, "app").state == "running"
            ),
            timeout=60,
        )
        with pytest.raises(errors.Conflict, match="container done is not running"):
            async with fleet_client.exec(vm_id, "done", ["true"], stdin=False, tty=False):
                pass
    finally:
        await fleet_client.delete_microvm(vm_id, grace_seconds=0)
    with pytest.raises((errors.Conflict, errors.NotFound)):
        async with fleet_client.port(vm_id, 8080):
            pass


async def test_the_session_limit_per_microvm(fleet_client: client.FleetClient, pod: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # the default config's bound (the fixture's fleetd runs with it)
        for _ in range(config.FleetConfig.model_fields["max_sessions_per_microvm"].default):
            await stack.enter_async_context(fleet_client.port(pod, 8080))
        with pytest.raises(errors.TooManySessions):
            async with fleet_client.port(pod, 8080):
                pass
        with pytest.raises(errors.TooManySessions):
            async with fleet_client.exec(pod, "app", ["true"], stdin=False, tty=False):
                pass
    # Closed sessions give their places back.
    assert (await run(fleet_client, pod, ["true"])).end == {"exit_code": 0}
