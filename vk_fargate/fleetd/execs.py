"""``exec`` for the ``process`` runtime: a command run in a container's running
instance with ``runc exec``, as one ``streams.Session``.

``runc exec`` takes the process's user, environment, working directory and
capabilities from the container's ``config.json``, and joins its namespaces, root and
cgroup, so the command runs as the container's own processes do. Without a TTY runc
gets our pipes and copies them to the command's (stdin ``/dev/null`` unless asked
for); with one, runc gets the slave of a pty pair as its stdio and ``--tty``: it makes
the container's console, copies between the two, and resizes it on SIGWINCH from the
size we set on our side. runc's own failure (a command not in the image) comes from
its JSON log, not the command's stderr. ``close`` kills the command inside the
container (its PID from ``--pid-file``) and runc, so a client that went away leaves
nothing behind.
Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import struct
import termios
import tty
from collections.abc import AsyncIterator
from pathlib import Path

from vk_fargate.fleetd import streams

CHUNK = 32 * 1024  # bytes read at a time from the command's output
QUEUED = 8  # output chunks waiting for the client, at most
FIRST_SIZE_SECONDS = 0.25  # a TTY's command waits this long for the client's size, at most
HOLD_POLL = 0.05  # seconds between looks for the pid file while stderr is held back
DRAIN_SECONDS = 2.0  # output read after runc ended, at most
EOF = b"\x04"  # the terminal's EOF character (^D), for a TTY's CLOSE


class ExecSession:
    """``command`` in runc container ``instance_id`` (under ``runc``: ``runc --root R``);
    runc's pid and log files go in ``scratch``. ``start`` before anything else."""

    def __init__(
        self,
        runc: list[str],
        instance_id: str,
        command: list[str],
        *,
        stdin: bool,
        tty: bool,
        scratch: Path,
    ) -> None:
        self._runc, self._id, self._command = runc, instance_id, command
        self._stdin, self._tty = stdin, tty
        self._pid_file = scratch / "pid"
        self._log_file = scratch / "runc.log"
        self._scratch = scratch
        self._proc: asyncio.subprocess.Process | None = None
        self._input: int | None = None  # where stdin goes: a pipe's write end, or the master
        self._outputs: list[tuple[int, int]] = []  # (channel, fd) read for the client
        self._theirs: list[int] = []  # runc's stdio (the pty's slave), until it runs
        self._spawning = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Make the stdio and start ``runc exec`` (with a TTY: at the first RESIZE, so
        the command starts at the client's size, or ``FIRST_SIZE_SECONDS`` into
        ``receive``); OSError when runc cannot be run."""
        self._scratch.mkdir(parents=True, exist_ok=True)
        try:
            if self._tty:
                master, slave = os.openpty()
                self._theirs.append(slave)
                # Raw from the start: bytes sent before runc makes it raw itself (a ^D,
                # a ^C) reach the container's terminal, not our side's line discipline.
                tty.setraw(slave)
                self._outputs = [(streams.STDOUT, master)]
                self._input = master
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                self._outputs = [(streams.STDOUT, out_r), (streams.STDERR, err_r)]
                stdin_fd = os.open(os.devnull, os.O_RDONLY)
                self._theirs += [stdin_fd, out_w, err_w]
                if self._stdin:
                    in_r, self._input = os.pipe()
                    self._theirs[0] = in_r
                    os.close(stdin_fd)
            for fd in (fd for _, fd in self._outputs):
                os.set_blocking(fd, False)
            if self._input is not None:
                os.set_blocking(self._input, False)
            if not self._tty:
                await self._spawn()
        except OSError:
            self._close_fds()
            raise

    async def _spawn(self) -> None:
        """Run ``runc exec`` on the stdio ``start`` made (once)."""
        async with self._spawning:
            if self._proc is not None or self._closed:
                return
            stdio = self._theirs * 3 if self._tty else self._theirs
            try:
                sized = await self._sized_process() if self._tty else None
                options, command = (
                    (["--process", str(sized)], [])  # the command is in the process file
                    if sized is not None
                    else (["--tty"] if self._tty else [], self._command)
                )
                self._proc = await asyncio.create_subprocess_exec(
                    *self._runc, "--log", str(self._log_file), "--log-format", "json",
                    "exec", *options, "--pid-file", str(self._pid_file), self._id, *command,
                    stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                    start_new_session=True,
                )  # fmt: skip
            finally:
                for fd in self._theirs:
                    os.close(fd)
                self._theirs = []

    async def _sized_process(self) -> Path | None:
        """A process file for ``runc exec --process`` on a TTY: the container's own
        process (its user, env, cwd, capabilities, from its ``config.json``), our
        command, and ``consoleSize`` set to our pty's size, so runc sizes the
        container's console before the command starts (its later resize races the
        command: ``stty size`` could see 0x0). None when it cannot be made (``--tty``)."""
        rows, cols = _size(self._outputs[0][1]) if self._outputs else (0, 0)
        state = await asyncio.create_subprocess_exec(
            *self._runc, "state", self._id,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await state.communicate()
        try:
            bundle = Path(json.loads(out)["bundle"])
            process = json.loads((bundle / "config.json").read_text())["process"]
        except (ValueError, KeyError, TypeError, OSError):
            return None
        process.update(args=self._command, terminal=True)
        if rows and cols:
            process["consoleSize"] = {"height": rows, "width": cols}
        path = self._scratch / "process.json"
        path.write_text(json.dumps(process))
        return path

    async def send(self, channel: int, payload: bytes) -> None:
        if channel == streams.RESIZE and self._tty:
            self._resize(payload)
            with contextlib.suppress(OSError):  # ``receive`` reports it
                await self._spawn()
        elif not self._stdin or self._input is None:
            return  # no stdin asked for, or already closed: nothing reads it
        elif channel == streams.STDIN:
            await _write_all(self._input, payload)
        elif channel == streams.CLOSE and payload[:1] == b"\x00":
            if self._tty:
                await _write_all(self._input, EOF)
            else:
                os.close(self._input)
                self._input = None

    def _resize(self, payload: bytes) -> None:
        """Set the pty's size and tell runc, which sizes the container's console to it
        (it is not the terminal's foreground process: the kernel does not signal it)."""
        try:
            size = json.loads(payload)
            width, height = int(size["Width"]), int(size["Height"])
        except (ValueError, KeyError, TypeError):
            return  # a malformed resize changes nothing, as the kubelet's
        if not (0 <= width < 65536 and 0 <= height < 65536) or not self._outputs:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(
                self._outputs[0][1], termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0)
            )
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGWINCH)

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        """The command's output, then its exit code (or runc's error) on ERROR.

        Stderr is held back until runc has written the pid file (the command runs):
        what comes before is runc's own failure, which goes on ERROR alone. runc
        copies the output and ends when the command has ended and its output is
        closed (a background child still writing to it holds the session, as
        containerd's exec does); output still open ``DRAIN_SECONDS`` after runc has
        exited is not waited for."""
        if self._proc is None:  # a TTY: give the client's first RESIZE a moment
            await asyncio.sleep(FIRST_SIZE_SECONDS)
            try:
                await self._spawn()
            except OSError as exc:
                yield streams.ERROR, streams.failed(f"cannot start runc exec: {exc}")
                return
        assert self._proc is not None, "start the session first"
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(QUEUED)
        readers = [
            asyncio.create_task(_forward(channel, fd, queue), name=f"exec-{self._id}-{channel}")
            for channel, fd in self._outputs
        ]
        waiter = asyncio.create_task(self._proc.wait(), name=f"exec-{self._id}-wait")
        deadline: float | None = None
        held: bytes | None = b""  # stderr before the command runs; None once it does
        try:
            while not (queue.empty() and all(r.done() for r in readers)):
                if deadline is None and waiter.done():
                    deadline = loop.time() + DRAIN_SECONDS
                if held is not None and (len(held) > CHUNK or self._pid_file.exists()):
                    if held:
                        yield streams.STDERR, held
                    held = None
                getter = asyncio.ensure_future(queue.get())
                watched = {getter, waiter, *readers} - {t for t in (waiter, *readers) if t.done()}
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                if held:  # look for the pid file again soon
                    timeout = min(timeout if timeout is not None else HOLD_POLL, HOLD_POLL)
                done, _ = await asyncio.wait(
                    watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter.done():
                    channel, payload = getter.result()
                    if channel == streams.STDERR and held is not None:
                        held += payload
                    else:
                        yield channel, payload
                    continue
                getter.cancel()
                if not done and deadline is not None and loop.time() >= deadline:
                    break  # drained long enough
            code = await waiter
        finally:
            for task in (*readers, waiter):
                task.cancel()
            await asyncio.gather(*readers, waiter, return_exceptions=True)
        while not queue.empty():
            channel, payload = queue.get_nowait()
            if channel == streams.STDERR and held is not None:
                held += payload
            else:
                yield channel, payload
        for reader in readers:
            if not reader.cancelled() and reader.exception() is not None:
                raise OSError(f"reading the output of exec {self._id}") from reader.exception()
        problem = runc_error(self._log_file)
        if held and problem is None:
            yield streams.STDERR, held
        yield (
            streams.ERROR,
            (streams.failed(problem) if problem is not None else streams.exited(_code(code))),
        )

    async def close(self) -> None:
        """Kill the command in the container and runc (if they still run); free all."""
        async with self._spawning:  # no runc starts after this
            if self._closed:
                return
            self._closed = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # runc waits for the command, so its PID is still that process.
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self._pid_file.read_text()), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            # runc died before writing the pid file, or as it did: look once more.
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self._pid_file.read_text()), signal.SIGKILL)
        self._close_fds()
        for path in (self._pid_file, self._log_file):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._scratch.rmdir()

    def _close_fds(self) -> None:
        fds = {fd for _, fd in self._outputs}
        if self._input is not None:
            fds.add(self._input)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for fd in self._theirs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._outputs, self._input, self._theirs = [], None, []


def _size(fd: int) -> tuple[int, int]:
    """Rows and columns of the terminal ``fd``; (0, 0) when it has none."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 0, 0
    return rows, cols


def runc_error(log: Path) -> str | None:
    """runc's last error from its JSON log (``exec: "x": executable file not found in
    $PATH``), or None when it logged none."""
    found = None
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    found = str(entry.get("msg", ""))
    if found is None:
        return None
    for prefix in ("exec failed: ", "unable to start container process: "):
        found = found.removeprefix(prefix)
    return found


def _code(returncode: int) -> int:
    """A shell-style exit code: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


async def _forward(channel: int, fd: int, queue: asyncio.Queue[tuple[int, bytes]]) -> None:
    """Put ``fd``'s chunks on ``queue``, waiting for room (back-pressure)."""
    async for chunk in _chunks(fd):
        await queue.put((channel, chunk))


async def _chunks(fd: int) -> AsyncIterator[bytes]:
    """What a non-blocking pipe or pty master gives, until EOF (EIO: the pty's other
    side is closed everywhere)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while True:
            await ready.wait()
            ready.clear()
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            yield data
    finally:
        loop.remove_reader(fd)


async def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to non-blocking ``fd``, waiting while it is full; dropped
    when the reader is gone (the command closed its stdin or ended)."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            writable = asyncio.Event()
            loop.add_writer(fd, writable.set)
            try:
                await writable.wait()
            finally:
                loop.remove_writer(fd)
        except OSError:  # EPIPE, or closed by ``close``
            return
