"""supervision.forever: a failing loop is restarted with back-off and logged once per
outage, on a fake clock (no real sleeps)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from vk_fargate import errors, supervision


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def _run(script: list[object], clock: Clock) -> None:
    """Supervise a loop whose runs follow ``script``: an exception to raise, or a number
    of seconds to run for and then return; cancelled when the script is done."""

    async def loop() -> None:
        if not script:
            raise asyncio.CancelledError
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, float)
        clock.now += step

    with pytest.raises(asyncio.CancelledError):
        await supervision.forever("demo", loop, sleep=clock.sleep, clock=clock)


async def test_an_outage_backs_off_doubling_to_the_cap_and_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    down = errors.KubeUnavailable("the API server did not answer: refused")
    with caplog.at_level(logging.DEBUG, logger="vk_fargate.supervision"):
        await _run([down] * 7, clock)
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "demo: 503 ServiceUnavailable: the API server did not answer: refused; "
        "retrying with back-off until it recovers"
    ]
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_healthy_run_ends_the_outage_and_resets_the_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    down = errors.KubeUnavailable("refused")
    with caplog.at_level(logging.WARNING, logger="vk_fargate.supervision"):
        await _run([down, down, down, 61.0, down], clock)
    assert clock.sleeps == [1.0, 2.0, 4.0, 1.0, 2.0]  # the run that ended counts as a failure
    assert len(caplog.records) == 2, "one line for each of the two outages"


async def test_a_bug_is_logged_with_its_traceback_once_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="vk_fargate.supervision"):
        await _run([KeyError("x"), KeyError("x"), KeyError("x")], clock)
    assert clock.sleeps == [1.0, 2.0, 4.0]
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "demo failed; restarting it with back-off"


async def test_cancellation_ends_it_at_once() -> None:
    started = asyncio.Event()

    async def loop() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervision.forever("demo", loop))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
