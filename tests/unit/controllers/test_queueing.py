"""Tests of the keyed work queue: dedup, no concurrent key, later, retries with back-off, stop.

On looptime's fake clock: delays and timeouts pass in no real time, and are exact.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from vk_fargate.controllers import queueing

# Fake time in a loop of each test's own: the session's loop, which other tests share,
# keeps its real clock.
pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.looptime]

Handler = Callable[[str], Awaitable[None]]
TIMEOUT = 30.0  # generous: only guards against hangs, never asserted on


@asynccontextmanager
async def running(handler: Handler, *, workers: int = 1) -> AsyncIterator[queueing.Queue]:
    queue = queueing.Queue(handler, workers=workers, name="test")
    queue.start()
    try:
        yield queue
    finally:
        await queue.stop()


class Recorder:
    """A handler that records keys and signals when a key has been handled n times."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.changed = asyncio.Event()

    async def __call__(self, key: str) -> None:
        self.calls.append(key)
        self.counts[key] += 1
        self.changed.set()

    async def handled(self, key: str, times: int = 1) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.counts[key] < times:
                self.changed.clear()
                await self.changed.wait()


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_a_key_added_many_times_while_queued_is_handled_once() -> None:
    recorder = Recorder()
    queue = queueing.Queue(recorder, workers=1, name="test")
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    queue.start()
    try:
        queue.add("end")
        await recorder.handled("end")
        assert recorder.calls == ["a", "b", "end"]
    finally:
        await queue.stop()


async def test_a_key_is_never_handled_twice_at_once_and_is_redone_after() -> None:
    calls: collections.Counter[str] = collections.Counter()
    inside: collections.Counter[str] = collections.Counter()
    most_inside = 0
    first_started = asyncio.Event()
    release = asyncio.Event()
    done = asyncio.Event()

    async def handler(key: str) -> None:
        nonlocal most_inside
        calls[key] += 1
        inside[key] += 1
        most_inside = max(most_inside, inside[key])
        try:
            if key == "a" and calls["a"] == 1:
                first_started.set()
                await release.wait()
            if key == "a" and calls["a"] == 2:
                done.set()
        finally:
            inside[key] -= 1

    async with running(handler, workers=3) as queue:
        queue.add("a")
        await asyncio.wait_for(first_started.wait(), TIMEOUT)
        queue.add("a")
        queue.add("a")
        # Other workers are idle, yet none takes "a" while it is in work.
        queue.add("b")
        await until(lambda: calls["b"] == 1)
        assert calls["a"] == 1
        assert len(queue) == 1
        release.set()
        await asyncio.wait_for(done.wait(), TIMEOUT)
        await until(lambda: len(queue) == 0)
    assert calls["a"] == 2
    assert most_inside == 1


async def test_later_adds_the_key_after_its_delay() -> None:
    recorder = Recorder()
    async with running(recorder) as queue:
        queue.later("slow", 0.05)
        queue.add("now")
        await recorder.handled("slow")
        assert recorder.calls == ["now", "slow"]


async def test_add_cancels_a_pending_later() -> None:
    recorder = Recorder()
    async with running(recorder) as queue:
        queue.later("a", 0.02)
        queue.add("a")
        await recorder.handled("a")
        # A later timer fires after the earlier one: by then "a" would be queued again.
        queue.later("end", 0.06)
        await recorder.handled("end")
        assert recorder.calls == ["a", "end"]


async def test_later_does_not_duplicate_a_queued_key() -> None:
    recorder = Recorder()
    queue = queueing.Queue(recorder, workers=1, name="test")
    queue.add("a")
    queue.later("a", 0.01)
    queue.start()
    try:
        await recorder.handled("a")
        queue.later("end", 0.05)
        await recorder.handled("end")
        assert recorder.calls == ["a", "end"]
    finally:
        await queue.stop()


async def test_a_failing_handler_is_retried_with_back_off_and_the_worker_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    calls: list[str] = []
    tries: list[float] = []  # when "bad" was tried
    failures_left = {"bad": 4}
    good = asyncio.Event()
    recovered = asyncio.Event()

    async def handler(key: str) -> None:
        calls.append(key)
        if key == "good":
            good.set()
            return
        tries.append(loop.time())
        if failures_left[key] > 0:
            failures_left[key] -= 1
            raise RuntimeError(f"{key} is broken")
        recovered.set()

    retries = queueing.Retries(first=1.0, cap=4.0)
    queue = queueing.Queue(handler, workers=1, name="test", retries=retries)
    queue.start()
    with caplog.at_level(logging.ERROR, logger=queueing.__name__):
        try:
            queue.add("bad")
            queue.add("good")
            await asyncio.wait_for(good.wait(), TIMEOUT)
            await asyncio.wait_for(recovered.wait(), TIMEOUT)
            # After a success the back-off starts over.
            failures_left["bad"] = 1
            recovered.clear()
            await asyncio.sleep(10)
            queue.add("bad")
            await asyncio.wait_for(recovered.wait(), TIMEOUT)
        finally:
            await queue.stop()

    assert calls[:2] == ["bad", "good"]
    assert calls.count("bad") == 7
    assert calls.count("good") == 1
    waits = [round(b - a, 3) for a, b in itertools.pairwise(tries)]
    assert waits[:4] == [1.0, 2.0, 4.0, 4.0]  # doubling, capped at 4 s
    assert waits[5] == 1.0  # waits[4] is the pause after the success
    failed = [r for r in caplog.records if "reconciling bad failed" in r.getMessage()]
    assert len(failed) == 5
    assert all(r.exc_info is not None for r in failed)


async def test_stop_cancels_workers_in_work_and_pending_timers() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []
    calls: list[str] = []

    async def handler(key: str) -> None:
        calls.append(key)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(key)
            raise

    queue = queueing.Queue(handler, workers=2, name="stoppable")
    queue.start()
    queue.add("a")
    await asyncio.wait_for(started.wait(), TIMEOUT)
    queue.later("timer", 0.01)
    await queue.stop()
    assert cancelled == ["a"]
    workers = [t for t in asyncio.all_tasks() if t.get_name().startswith("stoppable-worker-")]
    assert workers == []
    # The timer was cancelled: had it fired, "timer" would now be queued.
    await asyncio.sleep(0.05)
    assert "timer" not in calls
    assert len(queue) == 0


async def test_queues_sharing_keys_work_a_key_one_at_a_time_and_others_go_on() -> None:
    """Pods and status queues: a status write for one pod waits only for that pod's
    placement, never for placements of other pods queued before it."""
    exclusive = queueing.Exclusive()
    placing = asyncio.Event()
    release = asyncio.Event()
    inside: collections.Counter[str] = collections.Counter()
    most_inside = 0
    reported: list[str] = []

    async def place(key: str) -> None:
        nonlocal most_inside
        inside[key] += 1
        most_inside = max(most_inside, inside[key])
        placing.set()
        await release.wait()  # a slow placement (many API requests)
        inside[key] -= 1

    async def report(key: str) -> None:
        nonlocal most_inside
        inside[key] += 1
        most_inside = max(most_inside, inside[key])
        reported.append(key)
        inside[key] -= 1

    pods = queueing.Queue(place, workers=1, name="pods", exclusive=exclusive)
    status = queueing.Queue(report, workers=1, name="status", exclusive=exclusive)
    pods.start()
    status.start()
    try:
        for key in ("a", "b", "c"):
            pods.add(key)
        await asyncio.wait_for(placing.wait(), TIMEOUT)  # "a" is being placed
        status.add("a")
        status.add("z")  # a pod placed long ago: its status goes at once
        await until(lambda: reported == ["z"])
        release.set()
        await until(lambda: reported == ["z", "a"])
        await until(lambda: len(pods) == 0)
    finally:
        await pods.stop()
        await status.stop()
    assert most_inside == 1
