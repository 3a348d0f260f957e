"""Attach through the real fleetd, its shim and runc (process runtime): a container's
own stdin, stdout/stderr and terminal, as ``kubectl attach`` reaches them."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import backend, client
from vk_fargate.fleetd import streams

TIMEOUT = 20.0


async def _running(
    fleet_client: client.FleetClient, *containers: dict[str, object], **fields: object
) -> str:
    vm_id = helpers.new_id()
    await fleet_client.put_microvm(vm_id, helpers.spec(*containers, **fields))
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: all(helpers.container(v, str(c["name"])).state == "running" for c in containers),
    )
    return vm_id


async def _read_until(
    stream: backend.Stream, wanted: bytes, channel: int = streams.STDOUT
) -> bytes:
    """What the session sends on ``channel`` until ``wanted`` appears in it."""
    seen = b""

    async def more() -> bool:
        nonlocal seen
        message = await stream.receive()
        assert message is not None, f"the session ended before {wanted!r}; got {seen!r}"
        got, payload = streams.unframe(message)
        if got == channel:
            seen += payload
        return wanted in seen

    await waiting.until(more, timeout=TIMEOUT, what=f"{wanted!r} on channel {channel}")
    return seen


async def _outcome(stream: backend.Stream) -> dict[str, object]:
    """The session's ERROR message (it is the last one)."""

    async def last() -> dict[str, object] | None:
        message = await stream.receive()
        assert message is not None, "the session ended without its outcome"
        channel, payload = streams.unframe(message)
        return json.loads(payload) if channel == streams.ERROR else None

    return await waiting.until(last, timeout=TIMEOUT, what="the session's outcome")


async def _log(fleet_client: client.FleetClient, vm_id: str, name: str) -> str:
    return b"".join([c async for c in fleet_client.logs(vm_id, name)]).decode()


async def test_stdin_reaches_cat_and_its_output_the_log_and_every_session(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = await _running(fleet_client, {"name": "cat", "command": ["cat"], "stdin": True})
    one = await fleet_client.open_attach(vm_id, "cat", stdin=True, tty=False)
    two = await fleet_client.open_attach(vm_id, "cat", stdin=False, tty=False)
    try:
        await one.send(streams.frame(streams.STDIN, b"hello attach\n"))
        await _read_until(one, b"hello attach\n")
        await _read_until(two, b"hello attach\n")  # the same output, to both
        assert "hello attach\n" in await _log(fleet_client, vm_id, "cat")
        # cat still runs: stdin is held open, not at EOF, after a session's input
        vm = await fleet_client.get_microvm(vm_id)
        assert helpers.container(vm, "cat").state == "running"
    finally:
        await one.close()
        await two.close()
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_stdin_once_closes_stdin_after_the_first_session(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    vm_id = await _running(
        fleet_client,
        {
            "name": "once",
            "command": ["sh", "-c", "cat; echo stdin ended"],
            "stdin": True,
            "stdin_once": True,
        },
        restart_policy="Never",
    )
    # A plain GET (no upgrade) is answered 400 and is no session: stdin stays open.
    url = f"{fleet.url}/v1/microvms/{vm_id}/containers/once/attach?stdin=true"
    headers = {"Authorization": f"Bearer {fleet.token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as plain:
        assert plain.status == 400
    watcher = await fleet_client.open_attach(vm_id, "once", stdin=False, tty=False)
    first = await fleet_client.open_attach(vm_id, "once", stdin=True, tty=False)
    await first.send(streams.frame(streams.STDIN, b"only line\n"))
    await _read_until(watcher, b"only line\n")
    await first.send(streams.frame(streams.CLOSE, bytes((streams.STDIN,))))
    await _read_until(watcher, b"stdin ended\n")
    assert await _outcome(watcher) == {"exit_code": 0}
    await first.close()
    await watcher.close()
    vm = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: helpers.container(v, "once").state == "terminated",
        what="the container to end",
    )
    assert helpers.container(vm, "once").exit_code == 0


async def test_a_tty_container_shows_a_prompt_and_follows_resizes(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = await _running(
        fleet_client,
        {"name": "shell", "command": ["sh"], "stdin": True, "tty": True},
        restart_policy="Never",
    )
    session = await fleet_client.open_attach(vm_id, "shell", stdin=True, tty=True)
    try:
        await session.send(streams.frame(streams.RESIZE, b'{"Width": 91, "Height": 27}'))
        await session.send(streams.frame(streams.STDIN, b"stty size\r"))
        await _read_until(session, b"27 91")
        await session.send(streams.frame(streams.STDIN, b"exit 3\r"))
        assert await _outcome(session) == {"exit_code": 3}
    finally:
        await session.close()
    log = await _log(fleet_client, vm_id, "shell")
    assert "27 91" in log  # a terminal's output goes to the log too
    assert "# " in log  # the shell's prompt: it runs on a terminal


async def test_stderr_stays_apart_without_a_tty(fleet_client: client.FleetClient) -> None:
    vm_id = await _running(
        fleet_client,
        {
            "name": "echo",
            "command": ["sh", "-c", "while read l; do echo out $l; echo err $l >&2; done"],
            "stdin": True,
        },
    )
    session = await fleet_client.open_attach(vm_id, "echo", stdin=True, tty=False)
    try:
        await session.send(streams.frame(streams.STDIN, b"x\n"))
        await _read_until(session, b"err x\n", streams.STDERR)
    finally:
        await session.close()
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_plain_container_gives_its_output_and_refuses_stdin(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = await _running(
        fleet_client, helpers.shell("plain", "while true; do echo tick; sleep 0.2; done")
    )
    with pytest.raises(errors.BadRequest, match="not started with stdin"):
        await fleet_client.open_attach(vm_id, "plain", stdin=True, tty=False)
    session = await fleet_client.open_attach(vm_id, "plain", stdin=False, tty=False)
    try:
        await _read_until(session, b"tick\n")
    finally:
        await session.close()
    with pytest.raises(errors.NotFound):
        await fleet_client.open_attach(vm_id, "nope", stdin=False, tty=False)
    with pytest.raises(errors.NotFound):
        await fleet_client.open_attach(helpers.new_id(), "plain", stdin=False, tty=False)
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_an_ended_container_is_not_attached_to(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("done", "true"), restart_policy="Never")
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client, vm_id, lambda v: helpers.container(v, "done").state == "terminated"
    )
    with pytest.raises(errors.Conflict, match="not running"):
        await fleet_client.open_attach(vm_id, "done", stdin=False, tty=False)


async def test_a_restarted_container_is_a_new_instance_to_attach_to(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = await _running(
        fleet_client,
        helpers.shell("once", "echo up; read line; echo got $line; exit 5", stdin=True),
    )
    first = await fleet_client.open_attach(vm_id, "once", stdin=True, tty=False)
    await first.send(streams.frame(streams.STDIN, b"one\n"))
    await _read_until(first, b"got one\n")
    assert await _outcome(first) == {"exit_code": 5}  # that instance's end ends its session
    await first.close()
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: (c := helpers.container(v, "once")).restart_count == 1 and c.state == "running",
        what="the second instance running",
    )
    second = await fleet_client.open_attach(vm_id, "once", stdin=True, tty=False)
    await second.send(streams.frame(streams.STDIN, b"two\n"))
    await _read_until(second, b"got two\n")  # a fresh stdin, open again
    assert await _outcome(second) == {"exit_code": 5}
    await second.close()
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
