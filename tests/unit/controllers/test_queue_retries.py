"""Retries of the keyed work queue as client-go rate-limits them: a key's own back-off,
the queue's token bucket over all retries, and no back-off bypass when events keep
coming for a failing key. On looptime's fake clock, so times are exact."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from vk_fargate.controllers import queueing

Test = Callable[[], Coroutine[Any, Any, None]]


def fake_time(test: Test) -> Test:
    """Run ``test`` on looptime's fake clock, in a loop of its own: the session's loop,
    which other tests share, keeps its real clock."""
    return pytest.mark.asyncio(loop_scope="function")(pytest.mark.looptime(test))


class Failing:
    """A handler failing for every key in ``bad``, noting when each key was tried."""

    def __init__(self, *bad: str) -> None:
        self.bad = set(bad)
        self.tries: collections.defaultdict[str, list[float]] = collections.defaultdict(list)

    async def __call__(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        self.tries[key].append(round(loop.time(), 3))
        if key in self.bad:
            raise RuntimeError(f"{key} is broken")


@fake_time
async def test_events_for_a_key_waiting_for_its_retry_do_not_run_it_early() -> None:
    handler = Failing("bad")
    queue = queueing.Queue(handler, workers=1, name="test")  # first retry after 0.5 s
    queue.start()
    try:
        began = asyncio.get_running_loop().time()
        queue.add("bad")
        for _ in range(9):  # an event every 0.1 s, as a busy watch would send
            await asyncio.sleep(0.1)
            queue.add("bad")
        tries = [round(t - began, 3) for t in handler.tries["bad"]]
    finally:
        await queue.stop()
    assert tries == [0.0, 0.5], "tried once, then only when its back-off was over"


@fake_time
async def test_an_event_while_a_failing_key_is_in_work_does_not_cut_its_back_off() -> None:
    loop = asyncio.get_running_loop()
    tries: list[float] = []
    queue: queueing.Queue

    async def handler(key: str) -> None:
        tries.append(loop.time())
        queue.add(key)  # the watch reports a change while the key is in work
        raise RuntimeError("still broken")

    queue = queueing.Queue(handler, workers=1, name="test")
    queue.start()
    try:
        queue.add("bad")
        await asyncio.sleep(3.6)
    finally:
        await queue.stop()
    waits = [round(b - a, 3) for a, b in itertools.pairwise(tries)]
    assert waits == [0.5, 1.0, 2.0]


@fake_time
async def test_a_plain_later_is_still_cut_short_by_an_add() -> None:
    handler = Failing()
    queue = queueing.Queue(handler, workers=1, name="test")
    queue.start()
    try:
        began = asyncio.get_running_loop().time()
        queue.later("a", 60)
        await asyncio.sleep(1)
        queue.add("a")
        await asyncio.sleep(100)
        tries = [round(t - began, 3) for t in handler.tries["a"]]
    finally:
        await queue.stop()
    assert tries == [1.0], "at once when added, and the later is gone"


@fake_time
async def test_the_token_bucket_spaces_the_retries_of_many_keys() -> None:
    handler = Failing(*"abcde")
    retries = queueing.Retries(first=0.001, cap=0.001, qps=2.0, burst=2)
    queue = queueing.Queue(handler, workers=5, name="test", retries=retries)
    queue.start()
    try:
        began = asyncio.get_running_loop().time()
        for key in "abcde":
            queue.add(key)
        await asyncio.sleep(1.6)
        second = sorted(round(handler.tries[k][1] - began, 3) for k in "abcde")
    finally:
        await queue.stop()
    # Two retries from the burst at once; then one every 1/qps = 0.5 s.
    assert second == [0.001, 0.001, 0.5, 1.0, 1.5]


def test_the_bucket_refills_at_qps_up_to_its_burst() -> None:
    now = [0.0]
    bucket = queueing.TokenBucket(qps=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(5)] == pytest.approx([0, 0, 0, 0.1, 0.2])
    now[0] = 10.0  # long idle: the debt is paid and the burst saved again, no more
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])
