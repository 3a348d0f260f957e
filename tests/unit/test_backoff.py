"""supervision.Backoff, the one back-off of every retrying loop: plain values, a fake
random source and a fake sleep (no real waits)."""

from __future__ import annotations

import itertools

import pytest

from vk_fargate import supervision


def delays(backoff: supervision.Backoff, n: int) -> list[float]:
    return [backoff.next() for _ in range(n)]


def test_without_jitter_delays_grow_by_the_factor_up_to_the_cap() -> None:
    assert delays(supervision.Backoff(1.0, 30.0, jitter=0.0), 7) == [1, 2, 4, 8, 16, 30, 30]
    polls = delays(supervision.Backoff(0.05, 0.5, factor=1.5, jitter=0.0), 8)
    assert polls[:3] == pytest.approx([0.05, 0.075, 0.1125]) and polls[-2:] == [0.5, 0.5]


def test_jitter_draws_from_the_top_fraction_of_each_delay() -> None:
    # the random source at its two ends: 0 gives the full delay, 1 the lowest one
    ends = itertools.cycle([0.0, 1.0])
    half = supervision.Backoff(1.0, 8.0, uniform=lambda: next(ends))
    assert delays(half, 6) == [1.0, 1.0, 4.0, 4.0, 8.0, 4.0]
    full = supervision.Backoff(1.0, 8.0, jitter=1.0, uniform=lambda: 0.75)
    assert delays(full, 4) == [0.25, 0.5, 1.0, 2.0]


def test_reset_after_a_success_starts_over() -> None:
    backoff = supervision.Backoff(0.5, 15.0, jitter=0.0)
    assert delays(backoff, 4) == [0.5, 1.0, 2.0, 4.0]
    assert backoff.failures == 4
    backoff.reset()
    assert backoff.failures == 0
    assert delays(backoff, 2) == [0.5, 1.0]


def test_a_first_delay_over_the_cap_is_capped() -> None:
    assert delays(supervision.Backoff(0.2, 0.01, jitter=0.0), 2) == [0.01, 0.01]


async def test_sleep_waits_out_the_next_delay() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    backoff = supervision.Backoff(1.0, 4.0, jitter=0.0, sleep=sleep)
    assert [await backoff.sleep() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert slept == [1.0, 2.0, 4.0, 4.0]
