"""Memory of a process as the kernel reports it, for the benchmarks' RSS lines."""

from __future__ import annotations

import contextlib
from pathlib import Path


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, RssAnon), 0 when gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def private_kib(pid: int) -> int:
    """The process's private memory (USS: Private_Clean + Private_Dirty of
    /proc/<pid>/smaps_rollup), what one more such process costs; 0 when gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Private_"))


def proportional_kib(pid: int) -> int:
    """The process's proportional share of memory (PSS of /proc/<pid>/smaps_rollup):
    its private pages plus its share of pages it shares, such as the shim template's
    with the shims it forked; 0 when gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def shims(fleetd_pid: int) -> tuple[int | None, list[int]]:
    """fleetd's shim template and the shims it forked (those still its children)."""
    for template in children(fleetd_pid):
        with contextlib.suppress(OSError):
            if b"vk_fargate.fleetd.zygote" in Path(f"/proc/{template}/cmdline").read_bytes():
                return template, children(template)
    return None, []
