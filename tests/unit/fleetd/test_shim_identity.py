"""A shim is named by PID and start time, in ``shim.pid`` as the template forks it, so
a daemon that died before recording it still finds it, and a reused PID is never it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vk_fargate.fleetd import sandbox, supervisor


@pytest.fixture
def process() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_recorded_live_shim_is_found(tmp_path: Path, process: subprocess.Popen[bytes]) -> None:
    sandbox.record_shim(tmp_path, process.pid)
    found = supervisor.forked_for(tmp_path)
    assert found is not None and found.pid == process.pid
    assert found.start == sandbox.process_start(process.pid)
    assert supervisor.alive(found)


def test_a_dead_shim_or_another_process_with_its_pid_is_not(
    tmp_path: Path, process: subprocess.Popen[bytes]
) -> None:
    start = sandbox.process_start(process.pid)
    assert start is not None
    sandbox.write_json(tmp_path / "shim.pid", [process.pid, start - 1])  # a PID reused
    assert supervisor.forked_for(tmp_path) is None
    sandbox.record_shim(tmp_path, process.pid)
    process.kill()
    process.wait()
    assert supervisor.forked_for(tmp_path) is None


def test_nothing_recorded_or_garbage_is_nothing(tmp_path: Path) -> None:
    assert supervisor.forked_for(tmp_path) is None
    (tmp_path / "shim.pid").write_text('{"pid": 1}')
    assert supervisor.forked_for(tmp_path) is None
