"""``kubectl exec`` through the kubelet API: the WebSocket the API server hands on, bridged
message by message to the fleet's exec channel.

Kubernetes 1.36 proxies a client's WebSocket straight to a kubelet whose node lists
``ExtendWebSocketsToKubelet`` in ``status.declaredFeatures`` (ours do). The client speaks
``v5.channel.k8s.io``: binary messages whose first byte is the channel (0 stdin, 1
stdout, 2 stderr, 3 the final status, 4 terminal resize, 255 a channel's close). The
fleet's exec channel speaks the same framing (``fleetd/streams.py``), so every message
passes through as it is, in both directions, without buffering a stream; only the last
one, the fleet's ``{"exit_code": n}`` or ``{"error": "..."}``, becomes the
``metav1.Status`` the kubelet's streaming server writes: ``Success``, ``NonZeroExitCode``
with the code as the ``ExitCode`` cause (how ``kubectl exec -- sh -c 'exit 3'`` exits 3),
or an ``InternalError``.

The query is the kubelet's (``command`` repeated, ``input``, ``output``, ``error``,
``tty`` as ``1``); a TTY carries no stderr, as the kubelet drops it. Closing the client
ends the process (the fleet session is closed); a session idle in both directions for
the idle timeout is ended, as the kubelet's ``streamingConnectionIdleTimeout``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from vk_fargate import errors
from vk_fargate.fleet import backend as fleet_backend

log = logging.getLogger(__name__)

PROTOCOL = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
TRUE = ("1", "true")
MAX_MESSAGE = 16 * 1024 * 1024  # a client's stdin chunk (kubectl sends 32 KiB at most)


@dataclasses.dataclass(frozen=True)
class ExecOptions:
    """What an ``/exec`` or ``/attach`` request asks for (the kubelet's remotecommand
    options)."""

    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def parse_options(query: MultiMapping[str], *, attach: bool = False) -> ExecOptions:
    """The options of a query; ``errors.BadRequest`` says what is wrong, in the
    kubelet's words where it has them."""
    flags = {name: query.get(name, "").lower() in TRUE for name in ("input", "output", "error")}
    tty = query.get("tty", "").lower() in TRUE
    stderr = flags["error"] and not tty  # the kubelet drops stderr under a TTY
    if not (flags["input"] or flags["output"] or stderr):
        raise errors.BadRequest("you must specify at least 1 of stdin, stdout, stderr")
    command = tuple(query.getall("command", ()))
    if not attach and not command:
        raise errors.BadRequest("you must specify a command (the command query parameter)")
    return ExecOptions(command, flags["input"], flags["output"], stderr, tty)


def wants_websocket(request: web.Request, protocol: str) -> bool:
    """Whether ``request`` is a WebSocket upgrade offering ``protocol``."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return False
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return protocol in (p.strip() for p in offered.split(","))


def status(payload: bytes, command: tuple[str, ...]) -> dict[str, Any]:
    """The ``metav1.Status`` the kubelet writes for the fleet's final message."""
    try:
        outcome = json.loads(payload)
    except ValueError:
        outcome = {"error": f"the fleet sent an unreadable status: {payload[:200]!r}"}
    if not isinstance(outcome, dict):
        outcome = {"error": f"the fleet sent an unreadable status: {payload[:200]!r}"}
    code = outcome.get("exit_code")
    if isinstance(code, int) and code == 0:
        return {"metadata": {}, "status": "Success"}
    if isinstance(code, int):
        shown = "[" + " ".join(command) + "]"
        return {
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: "
            f"error executing command {shown}, exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    return internal_error(str(outcome.get("error") or "the command ended without a status"))


def internal_error(message: str) -> dict[str, Any]:
    """An ``InternalError`` status, as ``apierrors.NewInternalError`` words it."""
    cause = f"error executing command in container: {message}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


class Activity:
    """When a session last moved a byte, for its idle timeout."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    async def idle_for(self, timeout: float) -> None:
        """Return once nothing moved for ``timeout`` seconds."""
        while (left := self.last + timeout - time.monotonic()) > 0:
            await asyncio.sleep(left)


async def bridge(
    ws: web.WebSocketResponse,
    stream: fleet_backend.Stream,
    *,
    command: tuple[str, ...],
    idle_timeout: float,
    count: Callable[[str, int], None],
    what: str,
) -> None:
    """Pass messages both ways until the command ends (its status sent), the client
    goes, or the session idles out; then close both sides. ``count(direction, n)`` is
    told of every message's bytes (``in``: from the client)."""
    activity = Activity()

    async def upstream() -> None:
        async for message in ws:
            if message.type != web.WSMsgType.BINARY:
                continue  # v5 is binary only; pings are answered by aiohttp
            activity.touch()
            count("in", len(message.data))
            await stream.send(message.data)

    async def downstream() -> None:
        while (message := await stream.receive()) is not None:
            activity.touch()
            if message[:1] == bytes((ERROR,)):
                await _send_status(ws, status(message[1:], command))
                return
            count("out", len(message))
            await ws.send_bytes(message)
        await _send_status(ws, internal_error("the microVM's exec channel closed early"))

    tasks = {
        asyncio.create_task(upstream(), name=f"exec-in {what}"),
        asyncio.create_task(downstream(), name=f"exec-out {what}"),
        asyncio.create_task(activity.idle_for(idle_timeout), name=f"exec-idle {what}"),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            _log_end(task, what)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stream.close()
        await ws.close()


class PortSession:
    """A fleet port stream as ``portforward`` takes it (channel, payload), counting its
    bytes and its activity for the idle timeout."""

    def __init__(
        self,
        stream: fleet_backend.Stream,
        activity: Activity,
        count: Callable[[str, int], None],
    ) -> None:
        self._stream, self._activity, self._count = stream, activity, count

    async def send(self, channel: int, payload: bytes) -> None:
        self._activity.touch()
        self._count("in", len(payload))
        await self._stream.send(bytes((channel,)) + payload)

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        while (message := await self._stream.receive()) is not None:
            self._activity.touch()
            self._count("out", len(message) - 1)
            yield message[0], message[1:]

    async def close(self) -> None:
        await self._stream.close()


async def until_idle(
    work: Coroutine[Any, Any, None],
    activity: Activity,
    idle_timeout: float,
    ws: web.WebSocketResponse,
    what: str,
) -> None:
    """Run ``work`` (which serves ``ws``) until it ends or nothing moves for the idle
    timeout; then the WebSocket is closed, which ends ``work``'s sessions."""
    served = asyncio.create_task(work, name=f"serve {what}")
    idle = asyncio.create_task(activity.idle_for(idle_timeout), name=f"idle {what}")
    try:
        await asyncio.wait({served, idle}, return_when=asyncio.FIRST_COMPLETED)
        if idle.done():
            log.info("%s ended: idle for the idle timeout", what)
            await ws.close()
            await asyncio.wait({served}, timeout=10)
        if served.done() and not served.cancelled() and (exc := served.exception()):
            log.error("%s failed", what, exc_info=exc)
    finally:
        for task in (served, idle):
            task.cancel()
        await asyncio.gather(served, idle, return_exceptions=True)


def _log_end(task: asyncio.Task[None], what: str) -> None:
    """Say why a session ended early; the WebSocket is open, so it cannot be a status."""
    if task.cancelled() or task.exception() is None:
        if task.get_name().startswith("exec-idle"):
            log.info("%s ended: idle for the idle timeout", what)
        return
    exc = task.exception()
    if isinstance(exc, ConnectionError | aiohttp.ClientError | errors.FleetError):
        log.info("%s ended: %r", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)


async def _send_status(ws: web.WebSocketResponse, document: dict[str, Any]) -> None:
    await ws.send_bytes(bytes((ERROR,)) + json.dumps(document).encode())
