"""Attach for the ``process`` runtime: what a container with ``stdin`` or ``tty`` gets
in the shim, and the unix socket fleetd's attach sessions come in through.

Every container instance (a restart is a new one: attach again) can be attached to for
its output; with
  - ``stdin``: the container's stdin is a pipe whose write end the shim holds, so the
    container blocks reading it as under the kubelet; with ``stdin_once`` the end is
    closed (EOF) when the first session that had stdin ends, as CRI does;
  - ``tty``: the container runs on a terminal (``process.terminal``, ``runc run
    --console-socket``); the shim gets the terminal's master from runc (SCM_RIGHTS) and
    reads the output from it; input is written to it, resizes are its TIOCSWINSZ.

Its socket ``<vm_dir>/attach/<name>.sock`` (0600) takes sessions while the instance
runs, framed as ``attachwire`` says. A session gets output from the moment it attaches
(stdout and stderr apart, all on stdout with a tty), each in a bounded buffer: a
session that falls behind loses output, the container never waits for it. From the
client come STDIN, RESIZE and CLOSE (``[0]``: its stdin ended, the output goes on).
When the instance ends each session gets ERROR ``{"exit_code": n}`` and is closed.
Standard library only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vk_fargate.fleetd import attachwire, console, crilog, streams

# Output a session may have waiting before further output is dropped for it.
SESSION_BUFFER = 1 << 20


class _Session:
    """One attached client: its bounded output buffer and the task that sends it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.final: bytes | None = None
        self.wake = asyncio.Event()

    def put(self, channel: int, data: bytes) -> None:
        if self.size + len(data) > SESSION_BUFFER:
            return  # too far behind: this output is lost to it, not held up for it
        self.pending.append(attachwire.encode(channel, data))
        self.size += len(data)
        self.wake.set()

    def end(self, code: int) -> None:
        self.final = attachwire.encode(streams.ERROR, streams.exited(code))
        self.wake.set()

    async def send(self) -> None:
        """Send the output as it comes, and last the exit code; then close."""
        try:
            await self._send()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.writer.close()

    async def _send(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                chunk = self.pending.popleft()
                self.size -= len(chunk) - attachwire.HEADER.size
                self.writer.write(chunk)
                await self.writer.drain()
            if self.final is not None:
                self.writer.write(self.final)
                await self.writer.drain()
                return


class Point:
    """The attach point of one container instance."""

    def __init__(self, vm_dir: Path, name: str, settings: dict[str, Any]) -> None:
        self.path = attachwire.socket_path(vm_dir, name)
        self.name = name
        self.stdin = bool(settings.get("stdin"))
        self.stdin_once = bool(settings.get("stdin_once"))
        self.tty = bool(settings.get("tty"))
        self.input: int | None = None  # the stdin pipe's write end, or the master
        self.master: int | None = None
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._console: console.Console | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def prepare(self, config: dict[str, Any]) -> tuple[list[str], int | None]:
        """Set up ``config`` (the bundle's config.json) for this instance: runc's extra
        arguments and the stdin it is to pass on (None: /dev/null)."""
        config.setdefault("process", {})["terminal"] = self.tty
        if self.tty:
            self._console = console.Console(self.path.with_suffix(".console"))
            return ["--console-socket", self._console.address()], None
        return [], self.stdin_fd()

    async def open(self, out: IO[str], pumps: list[asyncio.Task[None]]) -> bool:
        """The container runs: take its terminal (its output pumped to the log ``out``,
        the task added to ``pumps``), then take sessions. False when runc did not hand
        the terminal over (the container is then to be killed)."""
        try:
            if self._console is not None:
                try:
                    self.master = self.input = await self._console.receive()
                finally:
                    self._console.close()  # runc has done with it
            await self.serve()
        except OSError as exc:
            print(f"attach {self.name}: {exc}", file=sys.stderr, flush=True)
            return False
        if self.master is not None:
            pump = console.pump(self.master, crilog.Writer(out, "stdout"), self.tee(streams.STDOUT))
            pumps.append(asyncio.create_task(pump, name=f"tty-{self.name}"))
        return True

    def stdin_fd(self) -> int | None:
        """The read end of a new stdin pipe, for runc (None: /dev/null); the shim keeps
        the write end."""
        if not self.stdin or self.tty:
            return None
        read, write = os.pipe()
        os.set_blocking(write, False)
        self.input = write
        return read

    async def serve(self) -> None:
        """Take sessions at ``<vm_dir>/attach/<name>.sock``."""
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with attachwire.short_path(self.path) as name:
            listener.bind(name)
        self.path.chmod(0o600)
        self._server = await asyncio.start_unix_server(self._session, sock=listener)

    def output(self, channel: int, data: bytes) -> None:
        """Hand output to every attached session (with a tty all is stdout)."""
        for session in list(self._sessions):
            session.put(streams.STDOUT if self.tty else channel, data)

    def tee(self, channel: int) -> Callable[[bytes], None]:
        """What hands one output stream's chunks to the sessions."""
        return functools.partial(self.output, channel)

    def end(self, code: int) -> None:
        """The instance has ended: each session gets its exit code (its sender sends
        what it still holds, then that, without the runtime waiting for it); the socket
        goes."""
        if self._server is not None:
            self._server.close()
        self.path.unlink(missing_ok=True)
        for session in list(self._sessions):
            session.end(code)
        self.close()

    def close(self) -> None:
        """Free the pipe, the master and the console socket (more than once is fine)."""
        for fd in {self.input, self.master} - {None}:
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self.input = self.master = None
        if self._console is not None:
            self._console.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await attachwire.read_frame(reader)
        if first is None or first[0] != attachwire.OPEN:
            writer.close()
            return
        try:
            wants_stdin = bool(json.loads(first[1] or b"{}").get("stdin")) and self.stdin
        except (ValueError, AttributeError):  # not fleetd's OPEN
            writer.close()
            return
        session = _Session(writer)
        self._sessions.add(session)
        task = asyncio.get_running_loop().create_task(
            session.send(), name=f"attach-send-{self.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)
        try:
            while (found := await attachwire.read_frame(reader)) is not None:
                channel, payload = found
                if channel == streams.STDIN and wants_stdin:
                    await self._write(payload)
                elif channel == streams.RESIZE and self.master is not None:
                    console.resize(self.master, payload)
                elif channel == streams.CLOSE and payload[:1] == bytes((streams.STDIN,)):
                    await self._stdin_done(wants_stdin)  # the output goes on
                    wants_stdin = False
        finally:
            self._sessions.discard(session)
            if session.final is None:
                task.cancel()
                writer.close()
            await self._stdin_done(wants_stdin)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"{task.get_name()} failed: {task.exception()!r}", file=sys.stderr, flush=True)

    async def _stdin_done(self, had_stdin: bool) -> None:
        """A session's stdin has ended: with stdinOnce, the container's ends too (EOF;
        with a tty, its end-of-file character)."""
        if not (had_stdin and self.stdin_once):
            return
        async with self._lock:
            if self.tty:
                if self.master is not None:
                    with contextlib.suppress(OSError):
                        os.write(self.master, b"\x04")
            elif self.input is not None:
                os.close(self.input)
                self.input = None

    async def _write(self, data: bytes) -> None:
        """Into the container's stdin, as fast as it reads (input is dropped when it
        has no stdin any more)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            while data and self.input is not None:
                fd = self.input
                try:
                    data = data[os.write(fd, data) :]
                except BlockingIOError:
                    room = loop.create_future()
                    loop.add_writer(fd, room.set_result, None)
                    try:
                        await room
                    finally:
                        loop.remove_writer(fd)
                except OSError:  # the container is gone, or closed its stdin
                    return
