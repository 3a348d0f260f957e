"""What a TLS connection costs, and giving freed memory back to the system.

The provider holds dozens of TLS connections during a burst (its pool to the API
server, the API server's to its webhook and kubelet API), and asyncio gives each a
256 KiB read buffer (``SSLProtocol.max_size``) on top of OpenSSL's own: 315 KiB per
end. 75 connections were 23 MiB of a 300-pod burst's 35 MiB. A TLS record is at most
16 KiB, so ``small_tls_buffers`` reads 64 KiB at a time: 127 KiB per end, with the same
throughput (247 against 237 MiB/s through one connection, both ends in one process).

Connections closed after the burst did not give their memory back either: glibc keeps
freed blocks in its heaps for reuse (60 closed connections: 37 MiB kept, 1.6 MiB after
``malloc_trim(0)``). ``trim_forever`` returns every whole free page every ``interval``
seconds, which takes about 1 ms (10 ms with 100 MiB to give back); on a libc without
it (musl) it only waits.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from asyncio import sslproto
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL = 30.0
TLS_READ_BUFFER = 64 * 1024


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Read TLS connections ``size`` bytes at a time (asyncio's default: 256 KiB), for
    every connection this process opens or accepts from now on."""
    sslproto.SSLProtocol.max_size = size


def trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: function(0)


async def trim_forever(
    interval: float = INTERVAL, find: Callable[[], Callable[[], object] | None] = trimmer
) -> None:
    """Give free heap pages back every ``interval`` seconds, until cancelled (``find``
    is how: ``trimmer``)."""
    trim = find()
    if trim is None:
        log.info("this C library has no malloc_trim; freed memory stays in the heap")
        await asyncio.Event().wait()
        return
    while True:
        await asyncio.sleep(interval)
        trim()
