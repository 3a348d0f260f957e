"""The fleet API's attach endpoint: ``GET
/v1/microvms/{id}/containers/{name}/attach?stdin=&tty=``, a WebSocket (``streams``'
framing) bridged to the container's attach socket in its shim (``attach``).

Kept apart from ``api`` (one ``register`` call there). 404 for an unknown microVM or
container, 409 when the container does not run (or its shim takes no sessions: a
microvm host's, or an instance ending), 400 for stdin asked of a container without
``stdin``. ``tty`` is the container's, whatever the request says, as the kubelet
decides it from the pod spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleetd import api, attach, streams

PATH = "/v1/microvms/{microvm_id}/containers/{container}/attach"
MAX_MESSAGE = attach.MAX_FRAME + 1


def register(app: web.Application) -> None:
    app.router.add_get(PATH, attach_container)


async def attach_container(request: web.Request) -> web.StreamResponse:
    fleet = request.app[api.FLEET]
    vm_id = api._vm_id(request)
    vm = fleet.get(vm_id)
    name = request.match_info["container"]
    spec = {c.name: c for c in [*vm.spec.init_containers, *vm.spec.containers]}.get(name)
    if spec is None:
        raise errors.NotFound(f"container {name} is not in microVM {vm_id}")
    stdin = api._bool(request, "stdin")
    api._bool(request, "tty")  # checked; the container's own setting decides
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
    ws = web.WebSocketResponse(protocols=(streams.SUBPROTOCOL,), max_msg_size=MAX_MESSAGE)
    if not ws.can_prepare(request).ok:
        raise errors.BadRequest(f"attach is a WebSocket ({streams.SUBPROTOCOL}); no upgrade asked")
    path = attach.socket_path(fleet.vms[vm_id].dir, name)
    try:
        with attach.short_path(path) as short:
            reader, writer = await asyncio.open_unix_connection(short, limit=MAX_MESSAGE)
    except OSError:
        raise errors.Conflict(
            f"container {name} of microVM {vm_id} takes no attach sessions (it is not "
            "running: it ended, or its shim is not up yet)"
        ) from None
    try:
        writer.write(attach.encode(attach.OPEN, json.dumps({"stdin": stdin}).encode()))
        await ws.prepare(request)
    except BaseException:
        writer.close()
        raise
    await _bridge(ws, reader, writer, f"attach-{vm_id}-{name}")
    return ws


async def _bridge(
    ws: web.WebSocketResponse,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    what: str,
) -> None:
    """Client messages to the shim, the shim's frames to the client, until either ends."""
    loop = asyncio.get_running_loop()
    inbound = loop.create_task(_from_client(ws, writer), name=f"{what}-in")
    try:
        while (found := await attach.read_frame(reader)) is not None:
            channel, payload = found
            await ws.send_bytes(streams.frame(channel, payload))
            if channel == streams.ERROR:
                break
    except ConnectionError:
        pass
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await inbound
        writer.close()
        await ws.close()


async def _from_client(ws: web.WebSocketResponse, writer: asyncio.StreamWriter) -> None:
    async for message in ws:
        if message.type != web.WSMsgType.BINARY:
            continue
        try:
            channel, payload = streams.unframe(message.data)
        except ValueError:
            continue
        writer.write(attach.encode(channel, payload))
        await writer.drain()
    # The client has gone: the shim's side ends the session (stdinOnce counts it ended).
    writer.close()
