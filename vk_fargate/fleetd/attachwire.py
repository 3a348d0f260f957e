"""The wire between fleetd and a shim's attach socket (``attach``): where the socket
is, how to name it within a unix socket address's 108 bytes, and the framing, both
ways ``[u8 channel][u32 big-endian length][payload]`` with ``streams``' channels. The
client's first frame is ``OPEN`` with JSON ``{"stdin": bool}``. Standard library only:
the shim and fleetd both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

OPEN = 254
HEADER = struct.Struct(">BI")
MAX_FRAME = 1 << 20


def socket_path(vm_dir: Path, name: str) -> Path:
    return vm_dir / "attach" / f"{name}.sock"


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """``path`` as a name that fits a unix socket address (108 bytes) for this process:
    through a ``/proc/self/fd`` link to its folder, whatever the folder's length."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def encode(channel: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(channel, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame, or None at the end (or a frame too large to be ours)."""
    try:
        channel, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > MAX_FRAME:
            return None
        return channel, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
