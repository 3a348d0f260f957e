"""supervision.Tasks, the one owner of background tasks: each is named and held until
it ends, and none dies silently. The loops' restarts run on looptime's fake clock."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from vk_fargate import supervision
from vk_fargate.controllers import queueing


async def test_a_failed_job_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    tasks = supervision.Tasks()

    async def job() -> None:
        raise KeyError("boom")

    with caplog.at_level(logging.ERROR, logger="vk_fargate.supervision"):
        task = tasks.once("collect-things", job())
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run
    [record] = caplog.records
    assert record.getMessage() == "collect-things failed" and record.exc_info is not None
    assert not tasks.failed.is_set()
    assert list(tasks) == [], "a task that ended is let go"


async def test_a_fatal_job_that_ends_fails_the_owner() -> None:
    tasks = supervision.Tasks()

    async def job() -> None:
        return None

    await tasks.once("leadership", job(), fatal=True)
    await asyncio.sleep(0)
    assert tasks.failed.is_set()


async def test_tasks_are_held_named_until_stopped_even_when_nobody_else_holds_them() -> None:
    tasks = supervision.Tasks()
    ran = asyncio.Event()

    async def loop() -> None:
        ran.set()
        await asyncio.Event().wait()

    tasks.forever("watch-things", loop)  # the returned task is dropped at once
    gc.collect()
    await ran.wait()
    assert [t.get_name() for t in tasks] == ["watch-things"]
    await tasks.stop()
    assert list(tasks) == [] and not tasks.failed.is_set()


class BrokenOnce(queueing.Exclusive):
    """An ``Exclusive`` whose first ``take`` raises: a bug in the worker's own loop."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def take(self, key: str, when_free: object) -> bool:
        if self.broken:
            self.broken = False
            raise RuntimeError("a bug outside the handler")
        return super().take(key, when_free)  # type: ignore[arg-type]


@pytest.mark.asyncio(loop_scope="function")  # fake time in a loop of its own
@pytest.mark.looptime
async def test_a_queue_worker_killed_by_a_bug_is_restarted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(key: str) -> None:
        handled.append(key)
        done.set()

    queue = queueing.Queue(handler, workers=1, name="fragile", exclusive=BrokenOnce())
    queue.start()
    try:
        with caplog.at_level(logging.ERROR, logger="vk_fargate.supervision"):
            queue.add("a")  # kills the worker's first round
            await asyncio.sleep(0.1)
            queue.add("b")
            async with asyncio.timeout(60):
                await done.wait()
        assert "b" in handled
        assert [r.getMessage() for r in caplog.records] == [
            "fragile-worker-0 failed; restarting it with back-off"
        ]
    finally:
        await queue.stop()
