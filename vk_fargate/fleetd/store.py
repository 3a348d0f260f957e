"""fleetd's durable state in SQLite: microVM records, host states and the event log.

Every change is committed before it is announced, so a restarted daemon knows every
microVM it ever accepted, and an event cursor handed out survives the restart. WAL
with ``synchronous=NORMAL`` keeps a commit well under a millisecond, so the calls are
made on the event loop directly (one connection, one thread).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS microvms (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,            -- the MicroVM as the API shows it
    shim_pid INTEGER,             -- the shim running it, with its start time (clock ticks)
    shim_start INTEGER            --   to tell it from a later process with the same PID
);
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    drain_deadline TEXT
);
CREATE TABLE IF NOT EXISTS events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """One SQLite database file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # microVMs

    def microvms(self) -> list[tuple[dict[str, Any], int | None, int | None]]:
        rows = self._db.execute("SELECT doc, shim_pid, shim_start FROM microvms").fetchall()
        return [(json.loads(doc), pid, start) for doc, pid, start in rows]

    def put_microvm(self, vm_id: str, doc: dict[str, Any], shim: tuple[int, int] | None) -> None:
        pid, start = shim if shim else (None, None)
        self._db.execute(
            "INSERT OR REPLACE INTO microvms (id, doc, shim_pid, shim_start) VALUES (?,?,?,?)",
            (vm_id, json.dumps(doc), pid, start),
        )

    def delete_microvm(self, vm_id: str) -> None:
        self._db.execute("DELETE FROM microvms WHERE id = ?", (vm_id,))

    # hosts

    def host_states(self) -> dict[str, tuple[str, str | None]]:
        rows = self._db.execute("SELECT id, state, drain_deadline FROM hosts").fetchall()
        return {host: (state, deadline) for host, state, deadline in rows}

    def put_host_state(self, host: str, state: str, deadline: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO hosts (id, state, drain_deadline) VALUES (?,?,?)",
            (host, state, deadline),
        )

    # small documents by key (the address pools' cursors, ...)

    def get_doc(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def put_doc(self, key: str, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(doc))
        )

    def delete_doc(self, key: str) -> None:
        self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every document whose key starts with ``prefix``, by the rest of its key."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()
        return {key[len(prefix) :]: dict(json.loads(value)) for key, value in rows}

    # events

    def append_event(self, doc: dict[str, Any]) -> int:
        """Store an event and return its cursor (also set as ``doc["cursor"]``)."""
        doc.pop("cursor", None)
        cursor = self._db.execute(
            "INSERT INTO events (doc) VALUES (?)", (json.dumps(doc),)
        ).lastrowid
        assert cursor is not None
        doc["cursor"] = cursor
        return cursor

    def events_after(self, cursor: int, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT cursor, doc FROM events WHERE cursor > ? ORDER BY cursor LIMIT ?",
            (cursor, limit),
        ).fetchall()
        return [{**json.loads(doc), "cursor": c} for c, doc in rows]

    def last_cursor(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def oldest_resumable(self) -> int:
        """The smallest ``since`` that still misses nothing."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'pruned_upto'").fetchone()
        return int(row[0]) if row else 0

    def prune_events(self, keep: int) -> None:
        upto = self.last_cursor() - keep
        if upto <= self.oldest_resumable():
            return
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('pruned_upto', ?)", (str(upto),)
        )
        self._db.execute("DELETE FROM events WHERE cursor <= ?", (upto,))
