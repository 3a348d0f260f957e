"""Shims as the daemon sees them: start one, recognise it after a restart, stop it.

A shim is identified by PID *and* start time (``/proc/<pid>/stat`` field 22), so a
PID reused by an unrelated process is never mistaken for, or signalled as, a shim.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import sandbox


@dataclasses.dataclass
class Shim:
    pid: int
    start: int
    child: subprocess.Popen[bytes] | None = None  # None for a shim adopted after a restart

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.start


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 overall; fields[0] is field 3


def launch(vm_dir: Path, spec: sandbox.ShimSpec) -> Shim:
    """Write ``spec.json`` and start the shim for it, in a session of its own."""
    vm_dir.mkdir(parents=True, exist_ok=True)
    sandbox.write_json(vm_dir / "spec.json", spec)
    with (vm_dir / "shim.log").open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "vk_fargate.fleetd.shim", str(vm_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = start_time(child.pid)
    return Shim(child.pid, started if started is not None else -1, child)


def adopt(pid: int | None, start: int | None) -> Shim | None:
    """The shim recorded as (pid, start) if that very process still runs."""
    if pid is None or start is None or start_time(pid) != start:
        return None
    return Shim(pid, start)


def alive(shim: Shim) -> bool:
    if shim.child is not None:
        return shim.child.poll() is None
    return start_time(shim.pid) == shim.start


def stop(shim: Shim, vm_dir: Path, grace: float) -> None:
    """Ask the shim to stop its microVM within ``grace`` seconds (it escalates itself)."""
    sandbox.write_json(vm_dir / "stop.json", {"grace_seconds": grace})
    if alive(shim):
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim.pid, signal.SIGTERM)


def kill(shim: Shim, cgroup_dirs: list[str]) -> None:
    """SIGKILL the shim's session and every process left in the microVM's cgroups."""
    if alive(shim):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shim.pid, signal.SIGKILL)
    for folder in cgroup_dirs:
        with contextlib.suppress(OSError):  # the group and its containers' child groups
            for procs in Path(folder).glob("**/cgroup.procs"):
                for line in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
    if shim.child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            shim.child.wait(timeout=5)


def read_status(vm_dir: Path) -> dict[str, Any] | None:
    status: dict[str, Any] | None = sandbox.read_json(vm_dir / "status.json")
    return status
