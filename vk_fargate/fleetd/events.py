"""The event log as a stream: append, and wait for what comes after a cursor.

Events are stored first (``store``), then waiters are woken; a reader always reads
from the store, so a reconnecting client resumes from its cursor and misses nothing.
Waking needs no task: ``publish`` sets the event the waiters wait on, and puts a fresh
one in its place for the next.
"""

from __future__ import annotations

import asyncio
from typing import Any

from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import store

# Prune the log every this many events, down to the configured retention.
PRUNE_EVERY = 500


class Bus:
    def __init__(self, db: store.Store, *, retention: int) -> None:
        self._db = db
        self._retention = retention
        self._published = asyncio.Event()
        self._since_prune = 0

    @property
    def cursor(self) -> int:
        return self._db.last_cursor()

    def publish(self, kind: models.EventType, **fields: Any) -> int:
        doc = {"type": kind, "time": models.now().isoformat(), **fields}
        cursor = self._db.append_event(doc)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._db.prune_events(self._retention)
            self._since_prune = 0
        published, self._published = self._published, asyncio.Event()
        published.set()
        return cursor

    def check(self, since: int) -> None:
        if since < self._db.oldest_resumable():
            raise errors.CursorExpired(
                f"cursor {since} is older than the kept events (from "
                f"{self._db.oldest_resumable()}); list the microVMs again"
            )
        if since > self.cursor:
            raise errors.BadRequest(f"cursor {since} is in the future (latest {self.cursor})")

    async def after(self, since: int, *, timeout: float) -> list[dict[str, Any]]:
        """Events after ``since``; waits up to ``timeout`` seconds for one to come."""
        found = self._db.events_after(since)
        if found:
            return found
        try:
            async with asyncio.timeout(timeout):
                while self.cursor <= since:
                    await self._published.wait()
        except TimeoutError:
            return []
        return self._db.events_after(since)
