"""CPU and memory readings of one running microVM, for ``GET /v1/microvms/{id}/stats``.

Why here: the daemon owns the cgroups, so it is the one place that can read them.

- **The microVM** is its cgroup (every process of the sandbox, or the QEMU process
  with its guest's RAM): CPU from ``cgroups.usage``, memory usage with the working set
  computed as cAdvisor does (usage minus inactive file pages, never below 0), RSS and
  page faults from ``memory.stat``.
- **A container** (``process`` runtime on cgroup v1 only) is the accounting group its
  current instance runs in (``sandbox.container_group``): CPU from ``cpuacct.usage``
  (nanoseconds, the instance's whole process tree, reaped children included), memory
  summed over its live processes from ``/proc/<pid>/status``: usage is ``VmRSS`` (all
  resident pages, shared library and binary pages included, though the kernel charges
  those to whichever cgroup touched them first), the working set ``RssAnon +
  RssShmem`` (the memory the processes hold of their own, the part a cgroup would be
  charged for; so a container does not seem bigger than its microVM), RSS ``RssAnon``.
  A container with no group (v2, or its group gone because it just ended) has no
  entry; the QEMU runtime has none at all.
- **The network** is the host's end of the microVM's link (the sandbox's veth, or the
  QEMU tap) read from ``/sys/class/net``, turned around: what the host end sent, the
  microVM received. None without one (``nominal`` networking).

Reads are small procfs/cgroupfs files, so they are done inline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from vk_fargate.fleet import models
from vk_fargate.fleetd import cgroups, network, sandbox

KIB = 1024  # /proc/<pid>/status reports sizes in kB (KiB)
STATUS_KEYS = ("VmRSS", "RssAnon", "RssShmem")


def read(
    mode: cgroups.Mode,
    vm: models.MicroVM,
    cgroup_dirs: list[str],
    *,
    per_container: bool,
    interface: str | None = None,
) -> models.MicroVMStats | None:
    """The microVM's readings now; None when it has no cgroup to read."""
    timestamp = models.now()
    usage = cgroups.usage(mode, vm.id)
    if usage is None:
        return None
    cpu_ns, usage_bytes = usage
    stat = cgroups.memory_stat(mode, vm.id)
    memory = models.MemoryStats(
        usage_bytes=usage_bytes,
        working_set_bytes=max(0, usage_bytes - stat.get("inactive_file", 0)),
        rss_bytes=stat.get("rss"),
        page_faults=stat.get("page_faults"),
        major_page_faults=stat.get("major_page_faults"),
    )
    containers: list[models.ContainerStats] = []
    accounting = sandbox.accounting_group(cgroup_dirs) if per_container else None
    if accounting is not None:
        running = [
            c for c in [*vm.status.init_containers, *vm.status.containers] if c.state == "running"
        ]
        for status in running:
            group = sandbox.container_group(accounting, status.name, status.restart_count)
            found = _container(group, status)
            if found is not None:
                containers.append(found)
    return models.MicroVMStats(
        microvm_id=vm.id,
        timestamp=timestamp,
        started_at=vm.status.started_at,
        cpu=models.CPUStats(usage_core_nanoseconds=cpu_ns),
        memory=memory,
        containers=containers,
        network=_network(interface) if interface is not None else None,
    )


def _network(host_end: str) -> models.NetworkStats | None:
    found = network.counters(host_end)
    if found is None:
        return None
    return models.NetworkStats(
        name="eth0",
        rx_bytes=found["tx_bytes"],
        rx_errors=found["tx_errors"],
        tx_bytes=found["rx_bytes"],
        tx_errors=found["rx_errors"],
    )


def _container(group: Path, status: models.ContainerStatus) -> models.ContainerStats | None:
    try:
        cpu_ns = int((group / "cpuacct.usage").read_text())
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return None
    memory = _memory(pids)
    return models.ContainerStats(
        name=status.name,
        started_at=status.started_at,
        cpu=models.CPUStats(usage_core_nanoseconds=cpu_ns),
        memory=models.MemoryStats(
            usage_bytes=memory["VmRSS"],
            working_set_bytes=memory["RssAnon"] + memory["RssShmem"],
            rss_bytes=memory["RssAnon"],
        ),
    )


def _memory(pids: Iterable[int]) -> dict[str, int]:
    """VmRSS, RssAnon and RssShmem in bytes, summed over the processes (gone ones: 0)."""
    found = dict.fromkeys(STATUS_KEYS, 0)
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in found:
                    found[key] += int(value.split()[0]) * KIB
    return found
