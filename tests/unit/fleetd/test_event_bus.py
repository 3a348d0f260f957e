"""fleetd's event bus wakes its waiters without a task per event (a task nobody holds
can be collected mid-flight, and nobody would see it fail), against a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vk_fargate.fleetd import events, store


def bus(tmp_path: Path) -> events.Bus:
    return events.Bus(store.Store(tmp_path / "fleetd.sqlite3"), retention=100)


async def test_publishing_starts_no_task(tmp_path: Path) -> None:
    log = bus(tmp_path)
    before = asyncio.all_tasks()
    for n in range(20):
        log.publish("maintenance", host_id=f"host-{n}")
    assert asyncio.all_tasks() == before


async def test_a_waiter_is_woken_by_the_next_event_and_reads_it(tmp_path: Path) -> None:
    log = bus(tmp_path)
    since = log.cursor
    waiters = [asyncio.create_task(log.after(since, timeout=30)) for _ in range(3)]
    await asyncio.sleep(0)  # all three are waiting
    assert not any(w.done() for w in waiters)
    cursor = log.publish("maintenance", host_id="host-1")
    async with asyncio.timeout(5):
        found = await asyncio.gather(*waiters)
    assert [[e["cursor"] for e in f] for f in found] == [[cursor]] * 3


async def test_a_waiter_with_nothing_new_gets_nothing_after_its_timeout(tmp_path: Path) -> None:
    log = bus(tmp_path)
    assert await log.after(log.cursor, timeout=0.01) == []
