"""A tty container's terminal, as the shim holds it (``attach``): the socket runc hands
the terminal's master over on (``runc run --console-socket``, SCM_RIGHTS), the pump of
its output, and resizes (TIOCSWINSZ). Standard library only.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import json
import os
import socket
import struct
import termios
from collections.abc import Callable
from pathlib import Path

from vk_fargate.fleetd import attachwire, crilog

WAIT = 10.0  # seconds runc has to hand the terminal's master over


class Console:
    """The socket runc hands one instance's terminal master over on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.unlink(missing_ok=True)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with attachwire.short_path(path) as name:
            self._socket.bind(name)
        path.chmod(0o600)
        self._socket.listen(1)
        self._socket.setblocking(False)
        # runc, another process, reaches the socket through our fd table (its path may
        # be too long for a socket address).
        self._folder: int | None = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)

    def address(self) -> str:
        """What runc's ``--console-socket`` is given."""
        return f"/proc/{os.getpid()}/fd/{self._folder}/{self.path.name}"

    async def receive(self) -> int:
        """The terminal's master (non-blocking, not inherited), as runc sent it;
        OSError when it did not."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(WAIT):
                conn, _ = await loop.sock_accept(self._socket)
        except TimeoutError:
            raise OSError("runc did not hand the terminal over") from None
        with conn:
            conn.settimeout(WAIT)
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise OSError("runc did not hand the terminal over")
        master = fds[0]
        os.set_inheritable(master, False)
        os.set_blocking(master, False)
        return master

    def close(self) -> None:
        """Free the socket (more than once is fine)."""
        self._socket.close()
        if self._folder is not None:
            os.close(self._folder)
            self._folder = None
            self.path.unlink(missing_ok=True)


async def pump(master: int, log: crilog.Writer, output: Callable[[bytes], None]) -> None:
    """Copy the terminal's output to ``log`` (as stdout) and ``output`` until the
    container's side is closed (EIO)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(master, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(master)
            continue
        except OSError:  # EIO: every process on the terminal has gone
            break
        if not chunk:
            break
        log.feed(decoder.decode(chunk))
        output(chunk)
    log.feed(decoder.decode(b"", final=True))
    log.close()


def resize(master: int, payload: bytes) -> None:
    """Apply a RESIZE message (``{"Width": w, "Height": h}``); a bad one is ignored."""
    with contextlib.suppress(ValueError, TypeError, OSError, AttributeError, KeyError):
        size = json.loads(payload)
        winsize = struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0)
        fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
