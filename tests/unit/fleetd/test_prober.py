"""The prober's kubelet semantics (thresholds, the startup gate, the liveness kill),
with scripted probe results on looptime's fake clock, so every time is exact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vk_fargate.fleetd import probes

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.looptime]


class Book:
    """Stands in for the shim's status: what the prober said, and when."""

    def __init__(self) -> None:
        self.said: list[tuple[float, str, Any]] = []

    def _now(self) -> float:
        return round(asyncio.get_running_loop().time(), 3)

    def probed(self, name: str, **gates: bool) -> None:
        self.said.append((self._now(), "probed", gates))

    def event(self, name: str, reason: str, message: str, *, warning: bool = True) -> None:
        self.said.append((self._now(), reason, message))


def scripted(monkeypatch: pytest.MonkeyPatch, **results: str) -> list[tuple[float, str]]:
    """Each probe kind's results in turn ("+" passes, "-" fails; then it passes)."""
    runs: list[tuple[float, str]] = []
    left: dict[str, Iterator[str]] = {kind: iter(r) for kind, r in results.items()}

    async def run_probe(spec: dict[str, Any], *_: Any) -> tuple[bool, str]:
        kind = spec["kind"]
        runs.append((round(asyncio.get_running_loop().time(), 3), kind))
        return next(left.get(kind, iter("")), "+") == "+", "nope"

    monkeypatch.setattr(probes, "run_probe", run_probe)
    return runs


def probe(kind: str, **fields: Any) -> dict[str, Any]:
    defaults = {"initial_delay_seconds": 0, "period_seconds": 1, "success_threshold": 1}
    return {"kind": kind, "exec": {"command": ["x"]}, **defaults, "failure_threshold": 3} | fields


def prober(book: Book, kills: list[float | None], **specs: dict[str, Any]) -> probes.Prober:
    return probes.Prober(
        "app",
        specs,
        pod_ip="127.0.0.1",
        exec_prefix=[],
        scratch=Path("/nonexistent"),
        status=book,  # type: ignore[arg-type]
        kill=kills.append,
    )


async def test_readiness_changes_only_after_its_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripted(monkeypatch, readiness="-++-+--")
    book, kills = Book(), []
    gates = prober(
        book, kills, readiness=probe("readiness", success_threshold=2, failure_threshold=2)
    )
    assert (gates.started, gates.ready) == (True, False)
    gates.start()
    await asyncio.sleep(6.5)
    gates.stop()
    assert [(t, what) for t, what, _ in book.said if what == "probed"] == [
        (2.0, "probed"),
        (6.0, "probed"),
    ]
    assert [g for _, what, g in book.said if what == "probed"] == [
        {"ready": True},
        {"ready": False},
    ]
    unhealthy = [t for t, what, _ in book.said if what == "Unhealthy"]
    assert unhealthy == [0.0, 3.0, 5.0, 6.0]
    assert kills == []


async def test_startup_gates_liveness_and_readiness(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = scripted(monkeypatch, startup="--+")
    book, kills = Book(), []
    gates = prober(
        book,
        kills,
        startup=probe("startup", failure_threshold=10),
        liveness=probe("liveness", initial_delay_seconds=1),
        readiness=probe("readiness"),
    )
    assert (gates.started, gates.ready) == (False, False)
    gates.start()
    await asyncio.sleep(4.5)
    gates.stop()
    assert [k for t, k in runs if t < 2.0] == ["startup", "startup"]
    assert (2.0, "probed", {"started": True, "ready": False}) in book.said
    assert [t for t, k in runs if k == "startup"] == [0.0, 1.0, 2.0]  # not after it passed
    assert (2.0, "liveness") in runs and (2.0, "readiness") in runs
    assert (2.0, "probed", {"ready": True}) in book.said


async def test_liveness_failing_kills_once_with_the_probes_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = scripted(monkeypatch, liveness="+-+---")
    book, kills = Book(), []
    gates = prober(book, kills, liveness=probe("liveness", termination_grace_seconds=5))
    gates.start()
    await asyncio.sleep(10)
    gates.stop()
    assert kills == [5]
    assert (5.0, "Killing", "Container app failed liveness probe, will be restarted") in book.said
    assert [t for t, _ in runs] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # then held
    assert [m for _, what, m in book.said if what == "Unhealthy"] == [
        "Liveness probe failed: nope"
    ] * 4
