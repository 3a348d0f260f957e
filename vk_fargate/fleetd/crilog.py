"""Container logs in the CRI format kubelet uses: ``<RFC3339Nano> <stream> <P|F> <text>``.

``F`` ends a line; ``P`` is a piece of a longer one (lines are cut at ``MAX_LINE``).
Standard library only (the shim writes these); the daemon reads them to serve logs.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import IO

# Longest piece written as one record, as containerd does (16 KiB).
MAX_LINE = 16 * 1024


def timestamp(moment: datetime.datetime | None = None) -> str:
    """RFC 3339 with nanoseconds, UTC, as kubelet prints with ``--timestamps``."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def parse_timestamp(text: str) -> datetime.datetime:
    """Inverse of ``timestamp`` (nanoseconds truncated to microseconds)."""
    head, _, frac = text.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.datetime.fromisoformat(f"{head}.{micros}+00:00")


@dataclasses.dataclass(frozen=True)
class Record:
    """One record of a CRI log file."""

    time: str
    stream: str
    full: bool
    text: str

    def render(self, *, with_timestamp: bool) -> str:
        """The record as kubelet serves it: text, newline when full, optional timestamp."""
        body = self.text + ("\n" if self.full else "")
        return f"{self.time} {body}" if with_timestamp else body


def parse(line: str) -> Record | None:
    """A record from one line of a file, or None for a line that is not one."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or parts[2] not in ("P", "F"):
        return None
    try:
        parse_timestamp(parts[0])
    except ValueError:
        return None
    text = parts[3] if len(parts) == 4 else ""
    return Record(parts[0], parts[1], parts[2] == "F", text)


class Writer:
    """Appends records for one stream to an open file, flushing every record."""

    def __init__(self, out: IO[str], stream: str) -> None:
        self._out = out
        self._stream = stream
        self._pending = ""

    def feed(self, data: str) -> None:
        """Record ``data``: whole lines as F, over-long pieces as P, keep the rest."""
        self._pending += data
        while True:
            newline = self._pending.find("\n", 0, MAX_LINE + 1)
            if newline != -1:
                self._write(self._pending[:newline], full=True)
                self._pending = self._pending[newline + 1 :]
            elif len(self._pending) > MAX_LINE:
                self._write(self._pending[:MAX_LINE], full=False)
                self._pending = self._pending[MAX_LINE:]
            else:
                return

    def close(self) -> None:
        """Record what is left as a last (full) line."""
        if self._pending:
            self._write(self._pending, full=True)
            self._pending = ""

    def _write(self, text: str, *, full: bool) -> None:
        self._out.write(f"{timestamp()} {self._stream} {'F' if full else 'P'} {text}\n")
        self._out.flush()
