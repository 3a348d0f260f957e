"""A keyed work queue, as client-go's: level-triggered reconciliation by key.

A key added many times before a worker takes it is worked once; a key is never
worked by two workers at once (added while in work, it is worked again after);
``later`` adds a key after a delay, unless an ``add`` comes first. A failing handler
is retried, never lost, and never kills a worker; it is logged in one line (at debug
level while the API server is unreachable), with a traceback only for a bug.

Retries are rate-limited as by client-go's default controller rate limiter: a key
waits the longer of its own back-off (doubling per failure, reset by a success) and
the queue's token bucket (``Retries``: so many retries a second, in bursts of so many).
Unlike client-go's ``Add`` (kubernetes/kubernetes#112325), an ``add`` of a key waiting
for its retry does not run it early: events that keep coming for a failing key do not
undo its back-off. Work is level-triggered, so the retry sees the latest state anyway.

Queues that work the same keys in different directions (pods from Kubernetes, status
from the fleet) share an ``Exclusive``: a key is then worked by one of them at a
time, while every other key goes on in both (a worker never waits for a key). Each
queue reports client-go's workqueue metrics (depth, adds, retries, time queued, time
worked) under its name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from vk_fargate import errors, metrics, supervision

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Retries:
    """How failing keys are retried: each after ``first`` seconds, doubling per failure
    up to ``cap``, and all of them at most ``qps`` a second in bursts of ``burst``."""

    first: float = 0.5
    cap: float = 30.0
    qps: float = 20.0
    burst: int = 300


class TokenBucket:
    """golang.org/x/time/rate's limiter as client-go's ``BucketRateLimiter`` uses it:
    ``qps`` tokens a second, at most ``burst`` saved; ``reserve()`` takes one (a debt
    when none is left) and says how long to wait for it."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float]) -> None:
        self.qps, self.burst, self._clock = qps, burst, clock
        self._tokens = float(burst)
        self._at: float | None = None  # when _tokens was counted

    def reserve(self) -> float:
        now = self._clock()
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Exclusive:
    """Keys that several queues work, held by one worker at a time across them.

    A worker never waits for a key another queue holds (it would stall every key
    behind it): ``take`` fails, and the key is added to its queue again once freed.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._waiting: dict[str, list[Callable[[], None]]] = {}

    def take(self, key: str, when_free: Callable[[], None]) -> bool:
        """Hold ``key``; or False, and ``when_free()`` is called once it is released."""
        if key in self._held:
            self._waiting.setdefault(key, []).append(when_free)
            return False
        self._held.add(key)
        return True

    def release(self, key: str) -> None:
        self._held.discard(key)
        for when_free in self._waiting.pop(key, []):
            when_free()


class Queue:
    def __init__(
        self,
        handler: Callable[[str], Awaitable[None]],
        *,
        workers: int,
        name: str,
        exclusive: Exclusive | None = None,
        retries: Retries = Retries(),
        clock: Callable[[], float] = _loop_time,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._name = name
        self._exclusive = exclusive or Exclusive()
        # This queue's metric children, bound once (labels() is a lookup per call).
        self._adds = metrics.QUEUE_ADDS.labels(name)
        self._depth = metrics.QUEUE_DEPTH.labels(name)
        self._retries = metrics.QUEUE_RETRIES.labels(name)
        self._waited = metrics.QUEUE_WAIT.labels(name)
        self._worked = metrics.QUEUE_WORK.labels(name)
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._since: dict[str, float] = {}  # when each queued key was added
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._policy = retries
        self._bucket = TokenBucket(retries.qps, retries.burst, clock)
        self._backoffs: dict[str, supervision.Backoff] = {}  # keys failing, until a success
        self._retrying: set[str] = set()  # keys waiting for their retry: an add waits too
        self._workers_tasks = supervision.Tasks()

    def add(self, key: str) -> None:
        self._adds.inc()
        if key in self._retrying:
            return  # it runs when its back-off is over, and not before
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._since[key] = time.monotonic()
            self._ready.put_nowait(key)
            self._depth.set(len(self._queued))

    def later(self, key: str, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds (an earlier ``add`` wins)."""
        if key in self._timers or key in self._queued:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self._retrying.discard(key)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

    def start(self) -> None:
        for n in range(self._workers):
            self._workers_tasks.forever(f"{self._name}-worker-{n}", self._work)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._retrying.clear()
        await self._workers_tasks.stop()

    def _retry(self, key: str) -> float:
        """Add ``key`` again after its back-off and a token of the bucket; that delay."""
        backoff = self._backoffs.get(key)
        if backoff is None:
            policy = self._policy
            backoff = supervision.Backoff(policy.first, policy.cap, jitter=0.0)
            self._backoffs[key] = backoff
        self._retries.inc()
        delay = max(backoff.next(), self._bucket.reserve())
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()  # a plain later: the retry replaces it
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._retrying.add(key)
        return delay

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._depth.set(len(self._queued))
            if not self._exclusive.take(key, functools.partial(self.add, key)):
                continue  # in work in another queue: added again when it is done there
            self._active.add(key)
            began = time.monotonic()
            self._waited.observe(began - self._since.pop(key, began))
            try:
                await self._handler(key)
                self._backoffs.pop(key, None)
            except asyncio.CancelledError:
                raise
            except errors.VkFargateError as exc:  # expected: one line (debug in an outage)
                delay = self._retry(key)
                outage = isinstance(exc, errors.KubeUnavailable)
                log.log(
                    logging.DEBUG if outage else logging.WARNING,
                    "%s: reconciling %s failed: %s (retry in %.1fs)",
                    *(self._name, key, exc, delay),
                )
            except Exception:  # a bug: its traceback
                delay = self._retry(key)
                log.exception("%s: reconciling %s failed (retry in %.1fs)", self._name, key, delay)
            finally:
                self._worked.observe(time.monotonic() - began)
                self._exclusive.release(key)
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
