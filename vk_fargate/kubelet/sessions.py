"""Bounds and counts of the kubelet API's streaming sessions (exec, port-forward).

Each session holds a microVM process or connection and a fleet WebSocket, so their
number is bounded per pod and per provider replica; one over a bound is refused with
429 before the upgrade, saying which bound. Open sessions and the bytes they carry are
exported as metrics, by kind.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

from vk_fargate import errors, metrics


class Sessions:
    """The open sessions, per pod UID; at most ``per_pod`` each and ``total`` in all."""

    def __init__(self, *, per_pod: int, total: int) -> None:
        self.per_pod = per_pod
        self.total = total
        self._open: collections.Counter[str] = collections.Counter()

    def open(self, uid: str) -> int:
        return self._open[uid]

    @contextlib.contextmanager
    def hold(self, uid: str, kind: str, what: str) -> Iterator[Callable[[str, int], None]]:
        """A slot for one ``kind`` session of pod ``uid`` (``what`` names it in the
        refusal); yields the byte counter ``count(direction, n)`` of the session."""
        if sum(self._open.values()) >= self.total:
            raise errors.TooManySessions(
                f"{what}: this virtual kubelet already serves {self.total} streaming "
                "sessions (VK_FARGATE_STREAMS_MAX); try again when one ends"
            )
        if self._open[uid] >= self.per_pod:
            raise errors.TooManySessions(
                f"{what}: the pod already has {self.per_pod} streaming sessions "
                "(VK_FARGATE_STREAMS_PER_POD); try again when one ends"
            )
        self._open[uid] += 1
        metrics.STREAM_SESSIONS.labels(kind).inc()
        metrics.STREAM_SESSIONS_TOTAL.labels(kind).inc()

        def count(direction: str, n: int) -> None:
            metrics.STREAM_BYTES.labels(kind, direction).inc(n)

        try:
            yield count
        finally:
            self._open[uid] -= 1
            if not self._open[uid]:
                del self._open[uid]
            metrics.STREAM_SESSIONS.labels(kind).dec()
