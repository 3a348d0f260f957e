"""Tests of aws.logging's batching (pure): PutLogEvents' limits of count, bytes, time span
and event size, and the order of lines, kept by the Batcher before anything is sent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from vk_fargate.aws import logging as awslogs


def test_ten_thousand_events_make_a_batch() -> None:
    batcher = awslogs.Batcher()
    done = [b for n in range(25_000) for b in batcher.add(1000 + n, f"line {n}")]
    rest = batcher.take()
    assert [len(b) for b in done] == [10_000, 10_000]
    assert len(rest) == 5_000
    assert [e.message for b in [*done, rest] for e in b] == [f"line {n}" for n in range(25_000)]
    assert batcher.take() == []


def test_a_batch_stays_under_the_byte_limit_counting_26_bytes_per_event() -> None:
    batcher = awslogs.Batcher()
    line = "x" * (100_000 - awslogs.EVENT_OVERHEAD)  # exactly 100,000 bytes with overhead
    done = [b for n in range(25) for b in batcher.add(n, line)]
    assert [len(b) for b in done] == [10, 10]  # 11 would be 1,100,000 > 1,048,576
    assert all(size(b) <= awslogs.MAX_BATCH_BYTES for b in done)


def test_the_per_event_overhead_binds_before_the_event_count() -> None:
    batcher = awslogs.Batcher()
    done = [b for n in range(10_000) for b in batcher.add(n, "z" * 80)]
    # 80 + 26 = 106 bytes an event: 9,892 fit in 1,048,576 bytes (without the
    # overhead all 10,000 would, at 800,000 bytes).
    assert [len(b) for b in done] == [9_892]
    assert len(batcher.take()) == 108


def test_a_batch_that_exactly_fills_the_byte_limit_is_allowed() -> None:
    batcher = awslogs.Batcher()
    per_event = awslogs.MAX_BATCH_BYTES // 4
    line = "y" * (per_event - awslogs.EVENT_OVERHEAD)
    done = [b for n in range(5) for b in batcher.add(n, line)]
    assert [size(b) for b in done] == [awslogs.MAX_BATCH_BYTES]


def test_a_batch_never_spans_24_hours() -> None:
    day = awslogs.MAX_BATCH_SPAN_MS
    batcher = awslogs.Batcher()
    done = [b for t in (0, 1, day - 1, day, day + 5) for b in batcher.add(t, "m")]
    assert [[e.timestamp for e in b] for b in done] == [[0, 1, day - 1]]
    assert [e.timestamp for e in batcher.take()] == [day, day + 5]


def test_timestamps_never_go_backwards_and_lines_keep_their_order() -> None:
    batcher = awslogs.Batcher()
    for timestamp, line in [(100, "a"), (90, "b"), (150, "c"), (120, "d"), (151, "e")]:
        assert batcher.add(timestamp, line) == []
    assert batcher.take() == [
        awslogs.LogEvent(100, "a"),
        awslogs.LogEvent(100, "b"),
        awslogs.LogEvent(150, "c"),
        awslogs.LogEvent(150, "d"),
        awslogs.LogEvent(151, "e"),
    ]
    # ...also across batches.
    assert batcher.add(10, "f") == []
    assert batcher.take() == [awslogs.LogEvent(151, "f")]


def test_an_empty_line_is_skipped() -> None:
    batcher = awslogs.Batcher()
    for line in ("a", "", "b"):
        batcher.add(1, line)
    assert [e.message for e in batcher.take()] == ["a", "b"]


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_an_oversized_line_is_split_between_characters(char: str) -> None:
    line = char * (awslogs.MAX_EVENT_BYTES // len(char.encode()) + 1000)
    pieces = awslogs.split_message(line)
    assert len(pieces) == 2
    assert "".join(pieces) == line
    assert all(0 < len(p.encode()) <= awslogs.MAX_EVENT_BYTES for p in pieces)
    assert awslogs.split_message("short") == ["short"]


def size(batch: Iterable[Any]) -> int:
    return sum(len(e.message.encode()) + awslogs.EVENT_OVERHEAD for e in batch)
