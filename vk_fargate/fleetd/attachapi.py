"""The fleet API's attach endpoint: ``GET
/v1/microvms/{id}/containers/{name}/attach?stdin=&tty=``, a WebSocket (``streams``'
framing) bridged to the container's attach socket in its shim (``attach``).

Kept apart from ``api`` (one ``register`` call there); served by ``sessions`` as exec
and port sessions are (the upgrade, the microVM's session bound, pings). 404 for an
unknown microVM or container, 409 when the container does not run (or its shim takes no
sessions: a microvm host's, or an instance ending), 400 for stdin asked of a container
without ``stdin``. ``tty`` is the container's, whatever the request says, as the
kubelet decides it from the pod spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator

from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleetd import api, attachwire, daemon, sessions, streams

PATH = "/v1/microvms/{microvm_id}/containers/{container}/attach"
MAX_MESSAGE = attachwire.MAX_FRAME + 1


def register(app: web.Application) -> None:
    app.router.add_get(PATH, attach_container)


class AttachSession:
    """One attach session (``streams.Session``) over the shim's attach socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, channel: int, payload: bytes) -> None:
        if self._writer.is_closing():
            return  # the session is over: ``receive`` says so
        step = attachwire.MAX_FRAME
        for start in range(0, max(len(payload), 1), step):  # within the shim's frame limit
            self._writer.write(attachwire.encode(channel, payload[start : start + step]))
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        while (found := await attachwire.read_frame(self._reader)) is not None:
            yield found
            if found[0] == streams.ERROR:
                return

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def open_session(fleet: daemon.Fleet, vm_id: str, name: str, *, stdin: bool) -> AttachSession:
    """Attach to running container ``name`` of microVM ``vm_id`` (the API's errors)."""
    path = _socket(fleet, vm_id, name, stdin=stdin)
    try:
        with attachwire.short_path(path) as short:
            reader, writer = await asyncio.open_unix_connection(short, limit=MAX_MESSAGE)
    except OSError:
        raise errors.Conflict(
            f"container {name} of microVM {vm_id} takes no attach sessions (it is not "
            "running: it ended, or its shim is not up yet)"
        ) from None
    writer.write(attachwire.encode(attachwire.OPEN, json.dumps({"stdin": stdin}).encode()))
    return AttachSession(reader, writer)


def _socket(fleet: daemon.Fleet, vm_id: str, name: str, *, stdin: bool) -> pathlib.Path:
    """The container's attach socket, once the request may attach to it."""
    vm = fleet.get(vm_id)
    spec = {c.name: c for c in [*vm.spec.init_containers, *vm.spec.containers]}.get(name)
    if spec is None:
        raise errors.NotFound(f"container {name} is not in microVM {vm_id}")
    if stdin and not spec.stdin:
        raise errors.BadRequest(
            f"container {name} was not started with stdin (its spec's stdin is false): "
            "attach without stdin"
        )
    status = {c.name: c for c in [*vm.status.init_containers, *vm.status.containers]}.get(name)
    if status is None or status.state != "running":
        raise errors.Conflict(f"container {name} of microVM {vm_id} is not running")
    host = fleet.hosts.get(vm.status.host or "")
    if host is None or host.config.runtime != "process":
        raise errors.Conflict(f"microVM {vm_id} runs on a microvm host, which has no attach")
    return attachwire.socket_path(fleet.vms[vm_id].dir, name)


async def attach_container(request: web.Request) -> web.StreamResponse:
    fleet = request.app[api.FLEET]
    vm_id = api._vm_id(request)
    stdin = api._bool(request, "stdin")
    api._bool(request, "tty")  # checked; the container's own setting decides
    name = request.match_info["container"]
    return await sessions.serve(
        request, vm_id, fleet, lambda: open_session(fleet, vm_id, name, stdin=stdin)
    )
