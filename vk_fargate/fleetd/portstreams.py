"""A TCP stream to a port of the pod, as one ``streams.Session``: what port-forward
carries, with no port opened on the host.

The socket is made inside the pod's network namespace and connected to 127.0.0.1
there, as the kubelet's (containerd's) port-forward does. A socket keeps the namespace
it was made in, so only its creation needs the namespace: a short-lived thread of its
own joins it (``setns``), makes the socket and goes back; the daemon's other threads
never leave the host's namespace. The connection is then driven by asyncio as any
other. Half-closes go both ways (``streams``): the client's ``[255, 0]`` shuts our
write side, the pod's EOF is sent as ``[255, 1]``. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import AsyncIterator

from vk_fargate.fleetd import streams

CLONE_NEWNET = 0x40000000  # from <sched.h>
CHUNK = 32 * 1024
CONNECT_SECONDS = 10.0


def go_error(exc: BaseException) -> str:
    """A connect error as Go words it: ``connect: connection refused``, ``i/o timeout``."""
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    if isinstance(exc, OSError) and exc.errno:
        text = os.strerror(exc.errno)
        return f"connect: {text[:1].lower()}{text[1:]}"
    return str(exc) or type(exc).__name__


def _setns(fd: int, what: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns({what}): {os.strerror(errno)}")


def _socket_in(netns: str) -> socket.socket:
    """A TCP socket made in network namespace ``netns`` (a path), on this thread."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns, os.O_RDONLY)
        try:
            _setns(target, netns)
        finally:
            os.close(target)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(own, "the daemon's own namespace")
    finally:
        os.close(own)


async def socket_in(netns: str | None) -> socket.socket:
    """A TCP socket in ``netns`` (None: this host's), made on a thread of its own: one
    that could not go back to its namespace ends with that socket made."""
    if netns is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    made: asyncio.Future[socket.socket] = loop.create_future()

    def work() -> None:
        try:
            sock = _socket_in(netns)
        except BaseException as exc:  # handed to the waiting coroutine
            loop.call_soon_threadsafe(_settle, made, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, made, sock, None)

    threading.Thread(target=work, name="netns-socket", daemon=True).start()
    return await made


def _settle(
    future: asyncio.Future[socket.socket], sock: socket.socket | None, exc: BaseException | None
) -> None:
    if future.cancelled():
        if sock is not None:
            sock.close()
    elif exc is not None:
        future.set_exception(exc)
    elif sock is not None:
        future.set_result(sock)


class PortSession:
    """A connection to 127.0.0.1:``port`` in ``netns``; ``start`` before anything else."""

    def __init__(self, netns: str | None, port: int) -> None:
        self._netns, self._port = netns, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._problem: str | None = None
        self._client_done = asyncio.Event()  # the client half-closed

    async def start(self) -> None:
        """Connect; a failure is reported on ERROR by ``receive``."""
        where = f"127.0.0.1:{self._port}"
        sock = None
        try:
            sock = await socket_in(self._netns)
            sock.setblocking(False)
            async with asyncio.timeout(CONNECT_SECONDS):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self._port))
            self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
        except (OSError, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            self._problem = f"dial tcp4 {where}: {go_error(exc)}"

    async def send(self, channel: int, payload: bytes) -> None:
        writer = self._writer
        if writer is None or self._client_done.is_set():
            return
        if channel == streams.STDIN and payload:
            writer.write(payload)
            with contextlib.suppress(OSError):
                await writer.drain()
        elif channel == streams.CLOSE and payload[:1] == b"\x00":
            self._client_done.set()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        """The pod's bytes, then ``[255, 1]`` at its EOF; over once the client is done
        writing too. A failed connect: ERROR with Go's text, and over."""
        if self._problem is not None or self._reader is None:
            yield streams.ERROR, streams.failed(self._problem or "not connected")
            return
        try:
            while chunk := await self._reader.read(CHUNK):
                yield streams.STDOUT, chunk
        except OSError:
            return  # reset: the session is over
        yield streams.CLOSE, bytes((streams.STDOUT,))
        await self._client_done.wait()

    async def close(self) -> None:
        self._client_done.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
