"""CPU and memory limits for microVMs through cgroups, v2 or v1, whichever the host has.

A microVM of ``vcpu_millis`` gets a CFS quota of that many milli-CPUs per 100 ms
period, and ``mem_mib`` of memory. This kind of machine mixes both versions: its v2
hierarchy has no cpu or memory controller, its v1 controllers are writable, so the
v1 layout is used there. Where neither works, limits are ``none`` and the host's
status says so.

The same folders are read back for the microVM's stats (``usage``, ``memory_stat``).
On v1 the ``process`` runtime also makes one CPU accounting child group per container
instance under the microVM's cpuacct folder (see ``sandbox.container_group``); only
cpuacct, so the container's processes stay members of the microVM's cpu and memory
groups, where limits and clean-up find them. ``remove`` deletes those children first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

Mode = Literal["cgroup-v2", "cgroup-v1", "none"]
ROOT = Path("/sys/fs/cgroup")
GROUP = "vk-fargate"
PERIOD_US = 100_000  # CFS period; quota = vcpu_millis * PERIOD_US / 1000


def detect() -> Mode:
    """Which cgroup layout can limit CPU and memory here."""
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists():
        available = controllers.read_text().split()
        if {"cpu", "memory"} <= set(available) and os.access(ROOT, os.W_OK):
            return "cgroup-v2"
    if all(os.access(ROOT / c, os.W_OK) for c in ("cpu", "cpuacct", "memory")):
        return "cgroup-v1"
    return "none"


def paths(mode: Mode, vm_id: str) -> list[Path]:
    """The cgroup folders of one microVM (one per v1 controller; one for v2)."""
    if mode == "cgroup-v2":
        return [ROOT / GROUP / vm_id]
    if mode == "cgroup-v1":
        return [ROOT / c / GROUP / vm_id for c in ("cpu", "cpuacct", "memory")]
    return []


def relative(mode: Mode, vm_id: str) -> str | None:
    """The microVM's group as a path inside each hierarchy (runc's cgroupsPath parent)."""
    return None if mode == "none" else f"/{GROUP}/{vm_id}"


def create(mode: Mode, vm_id: str, *, vcpu_millis: int, mem_mib: int) -> list[str]:
    """Make the microVM's cgroups with its limits; the folders the shim must join."""
    quota = vcpu_millis * PERIOD_US // 1000
    memory = mem_mib * 1024 * 1024
    folders = paths(mode, vm_id)
    if mode == "cgroup-v2":
        parent = ROOT / GROUP
        parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            (ROOT / "cgroup.subtree_control").write_text("+cpu +memory")
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+cpu +memory")
        folders[0].mkdir(exist_ok=True)
        (folders[0] / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        (folders[0] / "memory.max").write_text(str(memory))
    elif mode == "cgroup-v1":
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        cpu, _, mem = folders
        (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        (mem / "memory.limit_in_bytes").write_text(str(memory))
    return [str(f) for f in folders]


def remove(mode: Mode, vm_id: str) -> None:
    """Delete the microVM's cgroups (once their processes are gone), and on v1 the
    folders runc made for its containers in the other hierarchies (pids, devices, ...)."""
    folders = paths(mode, vm_id)
    if mode == "cgroup-v1":
        folders += [h / GROUP / vm_id for h in ROOT.iterdir() if (h / GROUP / vm_id) not in folders]
    for folder in folders:
        with contextlib.suppress(OSError):
            for child in folder.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()


def usage(mode: Mode, vm_id: str) -> tuple[int, int] | None:
    """(CPU time used in ns, memory in use in bytes), or None without cgroups."""
    folders = paths(mode, vm_id)
    try:
        if mode == "cgroup-v2":
            stat = dict(line.split() for line in (folders[0] / "cpu.stat").read_text().splitlines())
            memory = int((folders[0] / "memory.current").read_text())
            return int(stat["usage_usec"]) * 1000, memory
        if mode == "cgroup-v1":
            cpu_ns = int((folders[1] / "cpuacct.usage").read_text())
            memory = int((folders[2] / "memory.usage_in_bytes").read_text())
            return cpu_ns, memory
    except (OSError, KeyError, ValueError):
        return None
    return None


# memory.stat keys per layout, as cAdvisor reads them (v1: the hierarchical totals).
MEMORY_STAT_KEYS: dict[Mode, dict[str, str]] = {
    "cgroup-v1": {
        "inactive_file": "total_inactive_file",
        "rss": "total_rss",
        "page_faults": "total_pgfault",
        "major_page_faults": "total_pgmajfault",
    },
    "cgroup-v2": {
        "inactive_file": "inactive_file",
        "rss": "anon",
        "page_faults": "pgfault",
        "major_page_faults": "pgmajfault",
    },
}


def memory_stat(mode: Mode, vm_id: str) -> dict[str, int]:
    """The microVM's memory.stat as ``inactive_file``, ``rss``, ``page_faults`` and
    ``major_page_faults`` (those the kernel reports); empty without cgroups."""
    folders = paths(mode, vm_id)
    if not folders:
        return {}
    folder = folders[-1]  # v1: the memory controller's folder; v2: the only one
    try:
        text = (folder / "memory.stat").read_text()
        raw = dict(line.split(maxsplit=1) for line in text.splitlines())
    except (OSError, ValueError):
        return {}
    found = {}
    for ours, theirs in MEMORY_STAT_KEYS.get(mode, {}).items():
        with contextlib.suppress(KeyError, ValueError):
            found[ours] = int(raw[theirs])
    return found
