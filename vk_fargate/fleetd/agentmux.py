"""The host side of a ``microvm`` guest's agent: exec and port sessions into the VM.

A TCG guest has no vsock here (no ``/dev/vhost-vsock``), so the guest agent
(``hack/guestagent``) serves a virtio-serial port that QEMU backs with the Unix socket
``<vm_dir>/agent.sock``. One connection per VM carries all of its sessions; frames are
``[u32 session][u32 length][payload]`` (big-endian, at most ``MAX_FRAME`` bytes), the
payload a v5 channel message (``streams.py``) or ``OPEN``/``ACK``/``END``; session 0
is the link's ``HELLO`` handshake (the agent drops the sessions of an earlier host and
echoes the nonce; every frame before the echo is stale and skipped). Each direction
of a session sends at most ``WINDOW`` unacknowledged data bytes, so a slow reader
holds back only its own session, and what is queued here stays bounded.

A connection that breaks (QEMU ended, fleetd's side closed) ends its sessions with an
ERROR and is made anew by the next ``open_exec``/``open_port``. ``AgentUnavailable``
says the VM has no agent to reach (not started, ended, or still booting past
``CONNECT_TIMEOUT``). Standard library only, like the runtimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import sandbox, streams

log = logging.getLogger(__name__)

SOCKET = "agent.sock"  # runtimes/microvm.AGENT_SOCKET
HEADER = struct.Struct(">II")
MAX_FRAME = 32 * 1024  # one write(2) of the guest's port, never split by its kernel
MAX_PAYLOAD = MAX_FRAME - HEADER.size
WINDOW = 256 * 1024  # unacknowledged data bytes per session and direction
ACK_EVERY = 32 * 1024  # consumed bytes acknowledged at once (or when the queue is empty)
OPEN, ACK, END = 0x80, 0x81, 0x82
HELLO = b"H"
CONNECT_TIMEOUT = 60.0  # seconds for the agent to answer the handshake
HELLO_AGAIN = 2.0  # seconds between HELLOs while it does not
SUN_PATH_MAX = 107  # a Unix socket path's bytes, less its NUL


class AgentUnavailable(ConnectionError):
    """The microVM's guest agent cannot be reached; the message says why."""


class ProtocolError(ValueError):
    """A frame the agent's protocol does not allow."""


def encode(session: int, payload: bytes) -> bytes:
    """One frame; ``ProtocolError`` when the payload does not fit."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"a payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(session, len(payload)) + payload


class Decoder:
    """Splits a byte stream into ``(session, payload)`` frames."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._pending += data
        frames = []
        while len(self._pending) >= HEADER.size:
            session, size = HEADER.unpack_from(self._pending)
            if size > MAX_PAYLOAD:
                raise ProtocolError(f"a frame of {size} bytes exceeds {MAX_PAYLOAD}")
            if len(self._pending) < HEADER.size + size:
                break
            frames.append((session, bytes(self._pending[HEADER.size : HEADER.size + size])))
            del self._pending[: HEADER.size + size]
        return frames


async def open_exec(
    vm_dir: Path,
    spec: sandbox.ShimSpec,
    container: str,
    command: list[str],
    *,
    stdin: bool,
    tty: bool,
) -> streams.Session:
    """Run ``command`` in ``container`` of the VM (``runc exec`` in the guest).
    ``LookupError`` for a container the spec does not have."""
    names = [c["name"] for c in [*spec["init_containers"], *spec["containers"]]]
    if container not in names:
        raise LookupError(f"container {container!r} is not in microVM {spec['id']}")
    message = {"kind": "exec", "index": names.index(container), "command": command}
    return await _open(vm_dir, {**message, "stdin": stdin, "tty": tty})


async def open_port(vm_dir: Path, spec: sandbox.ShimSpec, port: int) -> streams.Session:
    """A TCP stream to ``127.0.0.1:port`` inside the VM (the pod's network namespace)."""
    del spec  # the guest has one network namespace, the pod's
    return await _open(vm_dir, {"kind": "port", "port": port})


async def disconnect(vm_dir: Path) -> None:
    """Close the VM's connection (its sessions end with an ERROR), e.g. on deletion."""
    if (mux := _muxes.pop(vm_dir, None)) is not None:
        await mux.close()


_muxes: dict[Path, _Mux] = {}
_connecting: dict[Path, asyncio.Task[_Mux]] = {}  # one connect per VM at a time


async def _open(vm_dir: Path, message: dict[str, Any]) -> streams.Session:
    mux = _muxes.get(vm_dir)
    if mux is None or mux.closed or mux.loop is not asyncio.get_running_loop():
        connect = _connecting.get(vm_dir)
        if connect is None or connect.get_loop() is not asyncio.get_running_loop():
            connect = asyncio.create_task(
                _Mux.connect(vm_dir), name=f"agentmux-connect-{vm_dir.name}"
            )
            _connecting[vm_dir] = connect
            connect.add_done_callback(lambda task: _connected(vm_dir, task))
        mux = await asyncio.shield(connect)  # its error is raised here, to every waiter
    return await mux.open(message)


def _connected(vm_dir: Path, task: asyncio.Task[_Mux]) -> None:
    if _connecting.get(vm_dir) is task:
        del _connecting[vm_dir]
    if not task.cancelled() and task.exception() is None:
        _muxes[vm_dir] = task.result()


class _Mux:
    """One connection to a VM's agent and the sessions it carries."""

    def __init__(
        self,
        vm_dir: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: Decoder,
    ) -> None:
        self.vm_dir = vm_dir
        self._decoder = decoder  # the handshake's: it may hold the start of a frame
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.sessions: dict[int, _Session] = {}
        self._next = secrets.randbelow(1 << 30) + 1  # unlike any earlier host's ids
        self._reader, self._writer = reader, writer
        self._task = asyncio.create_task(self._read(), name=f"agentmux-read-{vm_dir.name}")
        self._task.add_done_callback(self._ended)

    @classmethod
    async def connect(cls, vm_dir: Path) -> _Mux:
        reader, writer = await _connect(vm_dir / SOCKET)
        nonce = secrets.token_bytes(8)
        try:
            decoder = await asyncio.wait_for(_handshake(reader, writer, nonce), CONNECT_TIMEOUT)
        except (TimeoutError, OSError, ProtocolError, asyncio.IncompleteReadError) as exc:
            writer.close()
            why = "did not answer" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
            raise AgentUnavailable(
                f"the guest agent of microVM {vm_dir.name} {why} within {CONNECT_TIMEOUT:g}s "
                "(the guest is not up, or its initramfs has no agent)"
            ) from exc
        return cls(vm_dir, reader, writer, decoder)

    async def open(self, message: dict[str, Any]) -> _Session:
        session = _Session(self, self._next)
        self._next += 1
        self.sessions[session.id] = session
        self.write(session.id, bytes((OPEN,)) + json.dumps(message).encode())
        await self.drain()
        return session

    def write(self, session: int, payload: bytes) -> None:
        if not self.closed:
            self._writer.write(encode(session, payload))

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read(self) -> None:
        while data := await self._reader.read(65536):
            for session_id, payload in self._decoder.feed(data):
                if (session := self.sessions.get(session_id)) is not None and payload:
                    session.deliver(payload)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.closed = True
        why = "the connection to the microVM's guest agent was closed"
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("microVM %s: the guest agent's connection failed: %r", self.vm_dir, exc)
            why = f"the connection to the microVM's guest agent failed: {exc}"
        for session in list(self.sessions.values()):
            session.broken(why)
        self.sessions.clear()
        self._writer.close()
        if _muxes.get(self.vm_dir) is self:
            del _muxes[self.vm_dir]


async def _connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``path``, through ``/proc/self/fd`` when it is too long for a socket."""
    try:
        if len(os.fsencode(path)) <= SUN_PATH_MAX:
            return await asyncio.open_unix_connection(path)
        folder = os.open(path.parent, os.O_PATH)
        try:
            return await asyncio.open_unix_connection(f"/proc/self/fd/{folder}/{path.name}")
        finally:
            os.close(folder)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise AgentUnavailable(
            f"microVM {path.parent.name} has no guest agent to reach (not running): {exc}"
        ) from exc


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, nonce: bytes
) -> Decoder:
    """Send HELLO until the agent echoes it; what comes before is an earlier host's.

    Sent again every ``HELLO_AGAIN`` seconds: bytes written before the guest has opened
    its port are lost (a slow guest starts its agent after QEMU listens). A repeat is
    harmless: it comes before anything else of ours, and its echo is skipped as any
    session 0 frame. Returns the decoder, which may hold the start of the next frame."""
    decoder = Decoder()
    while True:
        writer.write(encode(0, HELLO + nonce))
        try:
            data = await asyncio.wait_for(reader.read(65536), HELLO_AGAIN)
        except TimeoutError:
            continue
        if not data:
            raise ConnectionError("the agent's socket closed")
        for session, payload in decoder.feed(data):
            if session == 0 and payload == HELLO + nonce:
                return decoder  # later frames in this read: echoes (the host sent nothing)


class _Session:
    """A ``streams.Session`` carried by a ``_Mux``."""

    def __init__(self, mux: _Mux, session_id: int) -> None:
        self.mux = mux
        self.id = session_id
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._credit = WINDOW
        self._credited = asyncio.Event()
        self._unacked = 0
        self._over = False  # END received, the connection broke, or closed here

    async def send(self, channel: int, payload: bytes) -> None:
        if channel == streams.STDIN:
            view = memoryview(payload)
            while view and not self._over:
                if self._credit <= 0:
                    self._credited.clear()
                    await self._credited.wait()
                    continue
                size = min(len(view), self._credit, MAX_PAYLOAD - 1)
                self._credit -= size
                self.mux.write(self.id, bytes((streams.STDIN,)) + bytes(view[:size]))
                view = view[size:]
                await self.mux.drain()
        elif channel in (streams.RESIZE, streams.CLOSE):
            if not self._over:
                self.mux.write(self.id, streams.frame(channel, payload))
                await self.mux.drain()
        else:
            raise ValueError(f"a client sends no channel {channel}")

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            # What the client took is acknowledged before waiting for more.
            if self._unacked >= ACK_EVERY or (self._unacked and self._queue.empty()):
                self.mux.write(self.id, bytes((ACK,)) + self._unacked.to_bytes(4, "big"))
                self._unacked = 0
            if (item := await self._queue.get()) is None:
                return
            yield item
            if item[0] in (streams.STDOUT, streams.STDERR):
                self._unacked += len(item[1])

    async def close(self) -> None:
        if not self._over:
            self.mux.write(self.id, bytes((END,)))
            self._finish()
            await self.mux.drain()

    def deliver(self, payload: bytes) -> None:
        op, body = payload[0], payload[1:]
        if op == ACK and len(body) == 4:
            self._credit += int.from_bytes(body, "big")
            self._credited.set()
        elif op == END:
            self._finish()
        elif op == streams.ERROR:
            self._queue.put_nowait((op, _error_document(body)))
        elif op in (streams.STDOUT, streams.STDERR, streams.CLOSE):
            self._queue.put_nowait((op, body))

    def broken(self, why: str) -> None:
        if not self._over:
            self._queue.put_nowait((streams.ERROR, streams.failed(why)))
            self._finish()

    def _finish(self) -> None:
        self._over = True
        self._credited.set()
        self._queue.put_nowait(None)
        if self.mux.sessions.get(self.id) is self:
            del self.mux.sessions[self.id]


def _error_document(body: bytes) -> bytes:
    """The agent's ERROR JSON as ``streams.exited``/``streams.failed`` write it."""
    try:
        document = json.loads(body)
    except ValueError:
        return streams.failed(f"the guest agent sent an unreadable end: {body[:200]!r}")
    if isinstance(document, dict) and isinstance(document.get("exit_code"), int):
        return streams.exited(document["exit_code"])
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return streams.failed(document["error"])
    return streams.failed(f"the guest agent sent an unknown end: {document!r}")
