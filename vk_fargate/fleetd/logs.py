"""Serving a container's CRI log file with kubelet's options.

``tail_lines``, ``since`` and ``limit_bytes`` apply as kubelet applies them; with
``follow`` the file is polled for growth until that container instance is over (it
terminated or restarted) and everything it wrote has been sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from vk_fargate.fleetd import crilog

POLL_INTERVAL = 0.1  # seconds between looks at a followed file


@dataclasses.dataclass(frozen=True)
class Options:
    follow: bool = False
    tail_lines: int | None = None
    since: datetime.datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def _selected(records: list[crilog.Record], options: Options) -> list[crilog.Record]:
    if options.since is not None:
        since = options.since
        records = [r for r in records if crilog.parse_timestamp(r.time) >= since]
    if options.tail_lines is not None:
        lines: deque[list[crilog.Record]] = deque(maxlen=options.tail_lines or 1)
        if options.tail_lines == 0:
            return []
        current: list[crilog.Record] = []
        for record in records:
            current.append(record)
            if record.full:
                lines.append(current)
                current = []
        if current:
            lines.append(current)
        records = [r for line in lines for r in line]
    return records


async def stream(
    path: Path, options: Options, *, active: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """The log as chunks; ``active`` says whether the instance may still write."""
    budget = options.limit_bytes
    async for record in _records(path, options, active=active):
        chunk = record.render(with_timestamp=options.timestamps).encode()
        if budget is not None:
            chunk = chunk[:budget]
            budget -= len(chunk)
        yield chunk
        if budget is not None and budget <= 0:
            return


async def _records(
    path: Path, options: Options, *, active: Callable[[], bool]
) -> AsyncIterator[crilog.Record]:
    """The selected records of the file, then (with ``follow``) those written later."""
    try:
        handle = path.open("r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        lines = handle.readlines()
        pending = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        for record in _selected([r for r in map(crilog.parse, lines) if r is not None], options):
            yield record
        while options.follow:
            still_active = active()
            data = handle.read()
            if data:
                pending += data
                *complete, pending = pending.split("\n")
                for parsed in map(crilog.parse, complete):
                    if parsed is not None:
                        yield parsed
            elif not still_active:
                return
            else:
                await asyncio.sleep(POLL_INTERVAL)
