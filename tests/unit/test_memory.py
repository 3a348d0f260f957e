"""A TLS connection costs less with small read buffers, and freed heap is given back:
after a burst's memory is freed, glibc keeps it (RSS stays up) until ``malloc_trim``;
the provider's loop trims on its interval. Memory is measured in fresh interpreters."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from vk_fargate import memory

# What both scripts below start with: this interpreter's RSS in KiB.
RSS = """
def rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
"""

# In a fresh interpreter: 60 MiB of 1 KiB objects (glibc's heap, not Python's arenas),
# every 64th kept, as a burst leaves the pods' state among its freed garbage.
BURST = """
from vk_fargate import memory

objects = [bytes(1024) for _ in range(60 * 1024)]
kept = objects[::64]
del objects
before = rss()
memory.trimmer()()
print(before, rss(), len(kept))
"""


# 40 TLS connections (both ends in one process) held open: RSS they add, in KiB.
CONNECTIONS = """
import asyncio, ssl, sys
from aiohttp import web
import aiohttp
from vk_fargate import listening, memory
from vk_fargate.kubelet import tls

async def main() -> None:
    if sys.argv[1] == "small":
        memory.small_tls_buffers()
    serving = tls.server_context(client_ca=None, hosts=("127.0.0.1",))
    app = web.Application()
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="ok")
    app.router.add_get("/", slow)
    runner, port = await listening.serve(app, host="127.0.0.1", port=0, tls=serving.context)
    trust = ssl.create_default_context(cadata=serving.cert.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
        async def get() -> None:
            async with http.get(f"https://127.0.0.1:{port}/") as response:
                await response.read()
        await get()
        before = rss()
        await asyncio.gather(*(get() for _ in range(40)))
        print(rss() - before)
    await runner.cleanup()

asyncio.run(main())
"""


def _run(script: str, *args: str) -> str:
    """What ``script`` prints, run in a fresh interpreter (with ``rss()``)."""
    command = [sys.executable, "-c", RSS + script, *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _connections_kib(mode: str) -> int:
    return int(_run(CONNECTIONS, mode))


def test_small_tls_buffers_make_a_connection_cost_less_than_half() -> None:
    default, small = _connections_kib("default"), _connections_kib("small")
    assert small * 2 < default, f"40 connections: {default} KiB by default, {small} KiB small"


def test_trimming_gives_a_burst_s_freed_heap_back() -> None:
    before, after, _ = (int(x) for x in _run(BURST).split())
    assert before - after > 40 * 1024, f"RSS {before} -> {after} KiB"


async def test_the_loop_trims_on_its_interval() -> None:
    trims: list[float] = []
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(
        memory.trim_forever(0.01, lambda: lambda: trims.append(loop.time())), name="trim"
    )
    async with asyncio.timeout(5):
        while len(trims) < 3:
            await asyncio.sleep(0.01)
    task.cancel()
    assert trims == sorted(trims) and trims[-1] - trims[0] >= 0.02


async def test_without_malloc_trim_the_loop_only_waits() -> None:
    task = asyncio.create_task(memory.trim_forever(0.01, lambda: None), name="trim")
    await asyncio.sleep(0.05)
    assert not task.done()  # an ended loop would be restarted by its supervisor
    task.cancel()
