"""Shims as the daemon sees them: start one, recognise it after a restart, stop it.

Shims are forked by the shim template (``zygote``), which the daemon starts on first
use and ends when it closes. A shim is identified by PID *and* start time
(``/proc/<pid>/stat`` field 22), so a PID reused by an unrelated process is never
mistaken for, or signalled as, a shim; that is also how it is recognised after a
restart of the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import sandbox

SPAWN_TIMEOUT = 30.0
"""Seconds the template may take to fork one shim before it is deemed stuck."""


@dataclasses.dataclass
class Shim:
    pid: int
    start: int

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.start


class Spawner:
    """The daemon's end of the shim template: one request at a time, restarted when it
    has died."""

    def __init__(self) -> None:
        self._template: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def spawn(self, vm_dir: Path) -> int:
        """Fork a shim for ``vm_dir`` (its ``spec.json`` written); the shim's PID. A
        template that died or hangs is replaced, once, before the request fails."""
        async with self._lock:
            for attempt in (1, 2):
                template = await self._running()
                try:
                    answer = await _ask(template, f"{vm_dir.resolve()}\n")
                    break
                except (OSError, TimeoutError) as exc:
                    await self._end()
                    if attempt == 2:
                        raise OSError(f"the shim template did not answer: {exc!r}") from exc
        verdict, _, detail = answer.partition(" ")
        if verdict == "ok" and detail.isdigit():
            return int(detail)
        raise OSError(f"the shim template could not start a shim: {detail or answer}")

    async def _running(self) -> asyncio.subprocess.Process:
        if self._template is None or self._template.returncode is not None:
            self._template = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vk_fargate.fleetd.zygote",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        return self._template

    async def close(self) -> None:
        """End the template (its shims run on)."""
        async with self._lock:
            await self._end()

    async def _end(self) -> None:
        template, self._template = self._template, None
        if template is None or template.returncode is not None:
            return
        assert template.stdin is not None
        template.stdin.close()
        try:
            async with asyncio.timeout(5):
                await template.wait()
        except TimeoutError:
            template.kill()
            await template.wait()


async def _ask(template: asyncio.subprocess.Process, line: str) -> str:
    assert template.stdin is not None and template.stdout is not None
    template.stdin.write(line.encode())
    async with asyncio.timeout(SPAWN_TIMEOUT):
        await template.stdin.drain()
        answer = await template.stdout.readline()
    if not answer:
        raise ConnectionError("the shim template exited; see the fleet daemon's log")
    return answer.decode().strip()


async def launch(vm_dir: Path, spec: sandbox.ShimSpec, spawner: Spawner) -> Shim:
    """Write ``spec.json`` and start the shim for it, in a session of its own."""
    vm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    sandbox.write_json(vm_dir / "spec.json", spec)
    pid = await spawner.spawn(vm_dir)
    started = sandbox.process_start(pid)
    return Shim(pid, started if started is not None else -1)


def adopt(pid: int | None, start: int | None) -> Shim | None:
    """The shim recorded as (pid, start) if that very process still runs."""
    if pid is None or start is None or sandbox.process_start(pid) != start:
        return None
    return Shim(pid, start)


def forked_for(vm_dir: Path) -> Shim | None:
    """The shim the template forked for ``vm_dir`` (its ``shim.pid``), if it still runs:
    the daemon may have died before recording it."""
    recorded = sandbox.recorded_shim(vm_dir)
    return adopt(*recorded) if recorded is not None else None


def alive(shim: Shim) -> bool:
    return sandbox.process_start(shim.pid) == shim.start


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


def read_status(vm_dir: Path) -> dict[str, Any] | None:
    status: dict[str, Any] | None = sandbox.read_json(vm_dir / "status.json")
    return status


def reload(shim: Shim, vm_dir: Path, spec: sandbox.ShimSpec) -> None:
    """Hand the shim a new ``spec.json`` (a ``process`` shim replaces the containers
    whose entries changed)."""
    sandbox.write_json(vm_dir / "spec.json", spec)
    if alive(shim):
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim.pid, signal.SIGHUP)
