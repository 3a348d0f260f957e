"""Loops that outlive their failures: restarted with back-off, one log line per outage.

A controller's loop (a watch, the heartbeats, an eviction sweep) that raises or ends is
started again after a back-off that doubles from 1 s to 30 s, and starts over once the
loop has run for a minute, as client-go's ``wait.BackoffUntil``. The first failure of
an outage is logged (with its traceback only when it is not one of ours, i.e. a bug);
the retries during it are logged at debug level, so an API-server restart costs a line
or two, not a traceback per retry. Only cancellation ends a supervised loop. Loops that
retry by themselves (a watch, the heartbeats) report their outages through ``Outage``
in the same way: one warning as it begins, one line when it ends. Every retrying loop
waits with ``Backoff``, the one jittered exponential back-off of the package.

Every background task belongs to a ``Tasks``, which names it, holds it until it ends
(the event loop keeps only weak references) and looks at how it ended, so that none
dies silently: a loop is ``forever`` (and its supervisor ending is a failure of the
process), a job is ``once`` (its error logged with its traceback, or fatal).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from vk_fargate import errors

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
HEALTHY_AFTER = 60.0  # seconds of running that end an outage and reset the back-off


class Backoff:
    """The delays of a retrying loop: from ``first``, times ``factor`` per failure, up to
    ``cap``; ``reset()`` after a success starts over. Each delay is drawn from the top
    ``jitter`` fraction of its value (0: exactly; 0.5: its upper half, so that clients
    failing together do not retry together; 1: anywhere from zero, "full jitter")."""

    def __init__(
        self,
        first: float,
        cap: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.first, self.cap, self.factor, self.jitter = first, cap, factor, jitter
        self._sleep = sleep
        self._uniform = uniform
        self._next = min(first, cap)
        self.failures = 0  # since the last reset

    def next(self) -> float:
        """The delay before the next try (and the one after grows)."""
        delay = self._next * (1.0 - self.jitter * self._uniform())
        self._next = min(self._next * self.factor, self.cap)
        self.failures += 1
        return delay

    async def sleep(self) -> float:
        """Wait out the next delay; that delay."""
        delay = self.next()
        await self._sleep(delay)
        return delay

    def reset(self) -> None:
        self._next = min(self.first, self.cap)
        self.failures = 0


class Outage:
    """What a retrying loop says about one kind of failure: a warning when it begins,
    debug lines while it lasts, and how long it lasted once it is over."""

    def __init__(
        self, logger: logging.Logger, what: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.what = what
        self.clock = clock
        self.began: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.began is None:
            self.began = self.clock()
            self.logger.warning("%s: %s; retrying until it works", self.what, exc)
        else:
            self.logger.debug("%s: %s", self.what, exc)

    def ended(self) -> None:
        if self.began is not None:
            self.logger.info("%s: works again after %.0fs", self.what, self.clock() - self.began)
            self.began = None


async def forever(
    name: str,
    start: Callable[[], Awaitable[None]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``start()`` again and again, with back-off, until cancelled."""
    backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX, jitter=0.0)
    while True:
        began = clock()
        bug: Exception | None = None
        try:
            await start()
            reason = "ended"
        except errors.VkFargateError as exc:
            reason = str(exc)
        except Exception as exc:  # not ours: a bug, whose traceback is wanted once
            reason, bug = repr(exc), exc
        if clock() - began >= HEALTHY_AFTER:
            backoff.reset()
        outage_began = backoff.failures == 0
        delay = backoff.next()
        if outage_began and bug is not None:
            log.error("%s failed; restarting it with back-off", name, exc_info=bug)
        elif outage_began:
            log.warning("%s: %s; retrying with back-off until it recovers", name, reason)
        else:
            log.debug("%s: %s; retry %d in %.0fs", name, reason, backoff.failures - 1, delay)
        await sleep(delay)


class Tasks:
    """The named background tasks of one owner; ``stop()`` cancels them and waits.

    ``failed`` is set when a ``forever`` loop's supervisor ends (only a bug can do that)
    or a ``fatal`` job ends: the owner's process should then stop.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.failed = asyncio.Event()

    def forever(self, name: str, start: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run the loop ``start()`` for good: restarted with back-off when it fails."""
        return self._start(forever(name, start), name, self._supervisor_done)

    def once(
        self, name: str, work: Coroutine[Any, Any, None], *, fatal: bool = False
    ) -> asyncio.Task[None]:
        """Run a job; its error is logged, and sets ``failed`` when ``fatal`` (as does
        its ending at all)."""
        return self._start(work, name, self._fatal_done if fatal else self._job_done)

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._tasks))

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(
        self,
        work: Coroutine[Any, Any, None],
        name: str,
        done: Callable[[asyncio.Task[None]], None],
    ) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(done)
        return task

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():  # forever() ends only when cancelled
            log.critical("supervisor of %s ended", task.get_name(), exc_info=task.exception())
            self.failed.set()

    def _fatal_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            log.critical("%s: %s", task.get_name(), task.exception())
            self.failed.set()

    @staticmethod
    def _job_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
