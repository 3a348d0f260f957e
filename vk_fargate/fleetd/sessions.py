"""Serving one exec or port session (``streams.Session``) over the fleet API's
WebSocket: the upgrade, both directions pumped at once, and the end.

Nothing is buffered beyond a message: the client's messages are handed to the session
one at a time (it waits for room), the session's output is sent as it comes (each
send waits for the socket). Whichever side ends first ends the session: the session's
output over (an exec's ERROR sent) closes the WebSocket; the WebSocket closing (the
client hung up) closes the session, which kills what still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleetd import daemon, streams

log = logging.getLogger(__name__)
# Seconds between pings: a client that vanished without closing (its host died) is
# noticed, and what its session runs is killed.
HEARTBEAT_SECONDS = 30.0
MAX_MESSAGE = 4 * 2**20  # bytes of one client message (kubectl sends 32 KiB at most)


async def serve(
    request: web.Request,
    vm_id: str,
    fleet: daemon.Fleet,
    opening: Callable[[], Awaitable[streams.Session]],
) -> web.StreamResponse:
    """Open the session (``opening``: its errors are plain HTTP answers), upgrade, pump."""
    ws = web.WebSocketResponse(
        protocols=(streams.SUBPROTOCOL,), heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_MESSAGE
    )
    ready = ws.can_prepare(request)
    if not ready.ok or ready.protocol != streams.SUBPROTOCOL:
        raise errors.BadRequest(
            f"a WebSocket upgrade with the {streams.SUBPROTOCOL} subprotocol is required"
        )
    with fleet.session_slot(vm_id):
        session = await opening()
        try:
            await ws.prepare(request)
            await _pump(ws, session, f"{request.match_info.route.name or 'stream'}-{vm_id}")
        finally:
            await session.close()
            await ws.close()
    return ws


async def _pump(ws: web.WebSocketResponse, session: streams.Session, name: str) -> None:
    upload = asyncio.create_task(_upload(ws, session), name=f"{name}-upload")
    download = asyncio.create_task(_download(ws, session), name=f"{name}-download")
    try:
        await asyncio.wait({upload, download}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upload, download):
            task.cancel()
        for task in (upload, download):
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                    pass  # the client went away: not an error
                except Exception:
                    log.exception("stream task %s failed", task.get_name())


async def _upload(ws: web.WebSocketResponse, session: streams.Session) -> None:
    """The client's messages to the session, until the WebSocket closes."""
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA, message=b"binary only")
            return
        try:
            channel, payload = streams.unframe(message.data)
        except ValueError:
            continue  # an empty message says nothing
        await session.send(channel, payload)


async def _download(ws: web.WebSocketResponse, session: streams.Session) -> None:
    """The session's output to the client, until it is over."""
    items = session.receive()
    try:
        async for channel, payload in items:
            await ws.send_bytes(streams.frame(channel, payload))
    finally:
        closing = getattr(items, "aclose", None)  # an async generator: end it here
        if closing is not None:
            await closing()
