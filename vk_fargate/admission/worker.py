"""The admission webhooks on a thread and an event loop of their own.

The API server calls the pod webhook for every pod created in the cluster, and the
create waits for the answer. Served from the provider's one event loop, those calls
queued behind whatever the loop had to do first: during a burst of placements and
status writes, admission p99 was 490-950 ms (``benchmarks/vs_kwok.py``). On a loop of
its own, a call waits for the interpreter's lock for at most its switch interval, not
for the provider's whole queue. Everything the webhook reads must therefore be safe to
read from another thread: its ``ProfileSource`` answers from an immutable snapshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading

from vk_fargate.admission import server as admission_server

log = logging.getLogger(__name__)


class Worker:
    """Runs ``server`` on a thread named ``admission`` until ``stop``."""

    def __init__(self, server: admission_server.AdmissionServer) -> None:
        self.server = server
        self._started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="admission", daemon=True)

    async def start(self) -> int:
        """Start the thread and serve; the bound port. A server that cannot start (the
        port taken, say) raises here, as ``AdmissionServer.start`` would."""
        self._thread.start()
        return await asyncio.wrap_future(self._started)

    async def stop(self) -> None:
        if not self._thread.is_alive():
            return  # never started, or its start failed
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed: the thread is ending
                self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # reported to start(), or logged: never lost
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                log.exception("the admission webhooks' thread failed; they no longer answer")

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        port = await self.server.start()
        self._started.set_result(port)
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()
