"""``kubectl port-forward``'s kubelet side: a SPDY/3.1 server inside a WebSocket.

The caller has accepted ``GET /portForward/{ns}/{pod}`` as a WebSocket with subprotocol
``SPDY/3.1+portforward.k8s.io``; ``serve`` then speaks SPDY over its binary messages
(``spdy`` parses them) as the kubelet's handler does (cri-streaming portforward
httpstream.go behind apiserver's streamtunnel.go), with what client-go's PortForwarder
(tools/portforward/portforward.go) expects:

- Per local connection the client opens two streams with headers ``streamType``
  (``error``, then ``data``), ``port`` and ``requestID`` (a counter), each answered by
  a SYN_REPLY with no headers; it half-closes the error stream at once and reads it to
  its end. A stream without a valid ``port`` or ``streamType`` is reset (the kubelet
  logs "Stream rejected"). Streams pair by ``requestID`` (old clients without it: by
  stream id, error id = data id - 2); a pair not complete within 30 s gets
  ``(conn=..., request=N) timed out waiting for streams`` on its error stream.
- A complete pair dials the pod's port (``open_port``, one ``Session`` per TCP
  connection). DATA on the data stream goes to the pod; the client's FIN becomes a
  half-close (``[255, 0]``); the pod's bytes come back as DATA, and its half-close
  (``[255, 1]``) as our FIN. The client resets the data stream once the pod's side is
  done (or its local socket fails) and then waits for the error stream's FIN: a reset
  ends the pair. A failed dial (the opener raising, or ERROR ``{"error": ...}``) is
  written on the error stream as the kubelet words it, ``error forwarding port P to pod
  SANDBOX, uid : REASON``, after which client-go drops the whole connection.
- PINGs with odd ids (the client's, every 10 s) are echoed. A GOAWAY stops new streams.
  At most ``max_streams`` streams are open at once (announced in SETTINGS); one more is
  refused with RST_STREAM REFUSED_STREAM and a warning in our log.
- Flow control: spdystream (client-go's SPDY) neither sends WINDOW_UPDATE nor obeys one,
  so our sending cannot wait for windows (it would stall after 64 KiB); back-pressure is
  the WebSocket's. We still send WINDOW_UPDATEs (stream and session) for the bytes the
  pod has taken, so a peer that honours windows never stalls. A slow pod holds up to
  ``BUFFERED`` bytes per connection; beyond that reading from the WebSocket pauses.

Frames are encoded and sent under one lock (header compression is one ordered stream).
The WebSocket closing ends every pair's task and closes its session; so does a failed
write, which is how a client that vanished is found while reading waits for a slow pod
(a WebSocket ping every ``PROBE`` seconds then).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from aiohttp import WSMsgType, web

from vk_fargate import supervision
from vk_fargate.kubelet import spdy

log = logging.getLogger(__name__)

SUBPROTOCOL = "SPDY/3.1+portforward.k8s.io"
# the port channel's numbers (vk_fargate/fleetd/streams.py, which kubelet may not import)
STDIN, STDOUT, ERROR, CLOSE = 0, 1, 3, 255
MAX_STREAMS = 128
STREAM_CREATION_TIMEOUT = 30.0  # seconds; the kubelet's default
CHUNK = 32 * 1024  # the most bytes we put in one DATA frame or hand the pod at once
BUFFERED = 1 << 20  # bytes from the client queued for one pod connection
WINDOW_STEP = spdy.DEFAULT_WINDOW // 2
PROBE = 10.0  # seconds between WebSocket pings while reading waits for a slow pod


class Session(Protocol):
    """One TCP connection to a pod's port: fleetd/streams.py's ``Session``, restated."""

    async def send(self, channel: int, payload: bytes) -> None: ...

    def receive(self) -> AsyncIterator[tuple[int, bytes]]: ...

    async def close(self) -> None: ...


Opener = Callable[[int], Awaitable[Session]]


async def serve(
    ws: web.WebSocketResponse,
    open_port: Opener,
    *,
    what: str,
    max_streams: int = MAX_STREAMS,
    creation_timeout: float = STREAM_CREATION_TIMEOUT,
) -> None:
    """Serve port-forwarding on a prepared WebSocket until it closes. ``what`` names the
    pod in messages as the kubelet names it (its sandbox: for us the microVM id)."""
    await _Connection(ws, open_port, what, max_streams, creation_timeout).run()


@dataclasses.dataclass(eq=False)
class _Stream:
    id: int
    kind: str  # "data" or "error"
    port: int
    fin_sent: bool = False  # our half is closed
    reset: bool = False  # the client reset it: nothing more is sent on it

    @property
    def writable(self) -> bool:
        return not (self.fin_sent or self.reset)


@dataclasses.dataclass(eq=False)
class _Pair:
    request_id: str
    port: int
    data: _Stream | None = None
    error: _Stream | None = None
    complete: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    inbound: asyncio.Queue[bytes | None] = dataclasses.field(
        default_factory=lambda: asyncio.Queue(BUFFERED // CHUNK)
    )
    unacked: int = 0  # bytes the pod took since our last WINDOW_UPDATE for the data stream
    finished: bool = False


class _Connection:
    def __init__(
        self, ws: web.WebSocketResponse, open_port: Opener, what: str, limit: int, wait: float
    ) -> None:
        self._ws, self._open, self._what = ws, open_port, what
        self._limit, self._wait = limit, wait
        self._reader, self._writer = spdy.Reader(), spdy.Writer()
        self._lock = asyncio.Lock()
        self._streams: dict[int, tuple[_Stream, _Pair]] = {}
        self._pairs: dict[str, _Pair] = {}
        self._tasks = supervision.Tasks()
        self._last_id = 0
        self._going_away = False
        self._unacked = 0  # the session's, as _Pair.unacked
        self._lost = asyncio.Event()

    async def run(self) -> None:
        try:
            await self._send(spdy.Settings({spdy.SETTINGS_MAX_CONCURRENT_STREAMS: self._limit}))
            async for message in self._ws:
                if message.type != WSMsgType.BINARY:
                    if message.type == WSMsgType.TEXT:
                        raise spdy.ProtocolError("a text message in a SPDY tunnel")
                    break
                for frame in self._reader.feed(message.data):
                    await self._handle(frame)
        except _Lost:
            log.info("port-forward to %s: the connection is gone", self._what)
        except spdy.ProtocolError as e:
            log.warning("port-forward to %s: %s; ending the connection", self._what, e)
            await self._send(spdy.GoAway(self._last_id, spdy.GOAWAY_PROTOCOL_ERROR))
        finally:
            await self._tasks.stop()
            await self._ws.close()

    async def _send(self, *frames: spdy.Frame) -> None:
        async with self._lock:
            if self._ws.closed:
                return
            data = b"".join(self._writer.encode(frame) for frame in frames)
            try:
                await self._ws.send_bytes(data)
            except ConnectionError:
                self._lost.set()  # ends a reading loop waiting for a slow pod

    async def _probe(self) -> None:
        """A ping, to find out whether a connection we are not reading is gone."""
        async with self._lock:
            try:
                await self._ws.ping()
            except ConnectionError:
                self._lost.set()

    async def _handle(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.SynStream():
                await self._syn(frame)
            case spdy.Data(stream_id, data, fin):
                await self._data(stream_id, data, fin)
            case spdy.RstStream(stream_id):
                stream, pair = self._streams.get(stream_id, (None, None))
                if stream is not None and pair is not None:
                    stream.reset = True
                    if stream.kind == "data":
                        pair.stop.set()
            case spdy.Ping(ping_id) if ping_id % 2 == 1:
                await self._send(frame)
            case spdy.GoAway():
                self._going_away = True
            case _:
                pass  # SETTINGS and WINDOW_UPDATE: see the docstring; no replies expected

    async def _syn(self, frame: spdy.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_id:
            raise spdy.ProtocolError(f"SYN_STREAM {sid} after {self._last_id}")
        self._last_id = sid
        if self._going_away or len(self._streams) >= self._limit:
            log.warning(
                "port-forward to %s: stream %d refused: %s",
                self._what,
                sid,
                "going away" if self._going_away else f"{self._limit} streams already open",
            )
            await self._send(spdy.RstStream(sid, spdy.REFUSED_STREAM))
            return
        try:
            kind, port = _check(frame.headers)
        except ValueError as e:
            log.warning("port-forward to %s: stream %d rejected: %s", self._what, sid, e)
            await self._send(spdy.RstStream(sid, spdy.CANCEL))
            return
        request_id = frame.headers.get("requestid", [""])[0]
        if not request_id:  # an old client: the kubelet's guess from stream ids
            request_id = str(sid if kind == "error" else sid - 2)
        stream = _Stream(sid, kind, port)
        pair = self._pairs.get(request_id)
        if pair is None:
            pair = self._pairs[request_id] = _Pair(request_id, port)
            self._tasks.once(f"port-forward {self._what} #{request_id} pairing", self._pair(pair))
        if getattr(pair, kind) is not None:
            text = (
                f"error processing stream for request {request_id}: {kind} stream already assigned"
            )
            log.warning("port-forward to %s: %s", self._what, text)
            await self._send(spdy.RstStream(sid, spdy.CANCEL))
            if pair.error is not None and pair.error.writable:
                await self._send(spdy.Data(pair.error.id, text.encode()))
            return
        setattr(pair, kind, stream)
        self._streams[sid] = (stream, pair)
        await self._send(spdy.SynReply(sid, {}))
        if frame.fin and kind == "data":  # a client with nothing to send
            await self._put(pair, None)
        if pair.data is not None and pair.error is not None:
            pair.complete.set()
            name = f"port-forward {self._what} #{request_id} port {port}"
            self._tasks.once(name, self._forward(pair))

    async def _data(self, stream_id: int, data: bytes, fin: bool) -> None:
        stream, pair = self._streams.get(stream_id, (None, None))
        if stream is None or pair is None or stream.kind != "data" or pair.finished:
            await self._consumed(None, len(data))  # nothing will take these bytes
            return
        pieces: list[bytes | None] = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]
        for piece in [*pieces, None] if fin else pieces:
            if pair.finished:  # _finish emptied the queue: the rest is dropped
                break
            await self._put(pair, piece)

    async def _put(self, pair: _Pair, piece: bytes | None) -> None:
        """Queue for the pod; while its queue is full, reading the WebSocket waits (the
        only back-pressure spdystream heeds) unless the connection is found gone (a
        write fails: the pod's bytes, or a ping every ``PROBE`` seconds)."""
        if not pair.inbound.full():
            pair.inbound.put_nowait(piece)
            return
        name = f"port-forward {self._what} #{pair.request_id}"
        put = asyncio.create_task(pair.inbound.put(piece), name=f"{name} queue")
        lost = asyncio.create_task(self._lost.wait(), name=f"{name} lost")
        try:
            while not (put.done() or lost.done()):
                await asyncio.wait({put, lost}, timeout=PROBE, return_when=asyncio.FIRST_COMPLETED)
                if not (put.done() or lost.done()):
                    await self._probe()
        finally:
            put.cancel()
            lost.cancel()
            await asyncio.gather(put, lost, return_exceptions=True)
        if put.cancelled():
            raise _Lost

    async def _consumed(self, pair: _Pair | None, size: int) -> None:
        """Give back window for ``size`` bytes taken (by the pod, or dropped)."""
        frames: list[spdy.Frame] = []
        self._unacked += size
        if self._unacked >= WINDOW_STEP:
            frames.append(spdy.WindowUpdate(0, self._unacked))
            self._unacked = 0
        if pair is not None and pair.data is not None:
            pair.unacked += size
            if pair.unacked >= WINDOW_STEP and not pair.data.reset:
                frames.append(spdy.WindowUpdate(pair.data.id, pair.unacked))
                pair.unacked = 0
        if frames:
            await self._send(*frames)

    async def _pair(self, pair: _Pair) -> None:
        """The kubelet's monitorStreamPair: a pair must complete in time."""
        try:
            await asyncio.wait_for(pair.complete.wait(), self._wait)
        except TimeoutError:
            text = f"(conn={self._what}, request={pair.request_id}) timed out waiting for streams"
            log.warning("port-forward: %s", text)
            if pair.error is not None and pair.error.writable:
                await self._send(spdy.Data(pair.error.id, text.encode()))
            await self._finish(pair)

    async def _forward(self, pair: _Pair) -> None:
        try:
            reason = await self._pump(pair)
            if reason and pair.error is not None and pair.error.writable:
                text = f"error forwarding port {pair.port} to pod {self._what}, uid : {reason}"
                log.info("port-forward: %s", text)
                await self._send(spdy.Data(pair.error.id, text.encode()))
        finally:
            await self._finish(pair)

    async def _pump(self, pair: _Pair) -> str:
        """Copy both ways until the pod's side ends or the client resets; the dial error."""
        try:
            session = await self._open(pair.port)
        except Exception as e:  # whatever stops the dial is the client's error text
            return str(e) or type(e).__name__
        name = f"port-forward {self._what} #{pair.request_id}"
        try:
            down = asyncio.create_task(self._downstream(pair, session), name=f"{name} from pod")
            up = asyncio.create_task(self._upstream(pair, session), name=f"{name} to pod")
            stop = asyncio.create_task(pair.stop.wait(), name=f"{name} reset")
            try:
                await asyncio.wait({down, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (down, up, stop):
                    task.cancel()
                await asyncio.gather(down, up, stop, return_exceptions=True)
            for task in (down, up):
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.warning("%s failed", task.get_name(), exc_info=error)
                    return str(error) or type(error).__name__
            return down.result() if not down.cancelled() else ""
        finally:
            await session.close()

    async def _downstream(self, pair: _Pair, session: Session) -> str:
        assert pair.data is not None
        reason = ""
        async for channel, payload in session.receive():
            if channel == STDOUT and pair.data.writable:
                for at in range(0, len(payload), CHUNK):
                    await self._send(spdy.Data(pair.data.id, payload[at : at + CHUNK]))
            elif channel == CLOSE and payload[:1] == bytes((STDOUT,)):
                await self._close(pair.data)
            elif channel == ERROR:
                reason = _reason(payload)
        return reason

    async def _upstream(self, pair: _Pair, session: Session) -> None:
        try:
            while (chunk := await pair.inbound.get()) is not None:
                await session.send(STDIN, chunk)
                await self._consumed(pair, len(chunk))
            await session.send(CLOSE, bytes((STDIN,)))
        except (ConnectionError, OSError) as e:
            log.info("port-forward to %s #%s: %s", self._what, pair.request_id, e)
            pair.stop.set()

    async def _close(self, stream: _Stream) -> None:
        if stream.writable:
            stream.fin_sent = True
            await self._send(spdy.Data(stream.id, b"", fin=True))

    async def _finish(self, pair: _Pair) -> None:
        """The kubelet's deferred Close()s: FIN the error stream, then the data stream."""
        if pair.finished:
            return
        pair.finished = True
        for stream in (pair.error, pair.data):
            if stream is not None:
                await self._close(stream)
                self._streams.pop(stream.id, None)
        self._pairs.pop(pair.request_id, None)
        while not pair.inbound.empty():  # frees a reader waiting for room
            pair.inbound.get_nowait()


class _Lost(Exception):
    """Sending failed: the WebSocket's connection is gone."""


def _check(headers: spdy.Headers) -> tuple[str, int]:
    """A stream's type and port, checked as the kubelet's httpStreamReceived does."""
    text = headers.get("port", [""])[0]
    if not text:
        raise ValueError('"port" header is required')
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise ValueError(f'unable to parse "{text}" as a port')
    if int(text) < 1:
        raise ValueError(f'port "{text}" must be > 0')
    kind = headers.get("streamtype", [""])[0]
    if not kind:
        raise ValueError('"streamType" header is required')
    if kind not in ("data", "error"):
        raise ValueError(f'invalid stream type "{kind}"')
    return kind, int(text)


def _reason(payload: bytes) -> str:
    """The error channel's text: ``{"error": ...}``, or the payload itself."""
    try:
        return str(json.loads(payload)["error"])
    except (ValueError, KeyError, TypeError):
        return payload.decode("utf-8", "replace")
