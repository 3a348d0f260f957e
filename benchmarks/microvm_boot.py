"""Benchmark: how fast a ``microvm`` guest boots and how much memory its QEMU holds.

Usage: python benchmarks/microvm_boot.py [--runs N] [--vcpu-millis M] [--mem-mib M]
Boots N guests one after another (the MicroVMRuntime, as a shim runs it), each running
``echo ready; sleep 1``, and prints the median and max time from QEMU's start to the
guest's /init and to the container's first output line, and QEMU's resident memory
(largest VmRSS seen while the guest ran; its anonymous part is what each further guest
adds, the rest is the page-cached vmlinux they share). The first run builds the guest
assets into the cache (one apt download of the kernel) before any timing starts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

import procstat  # benchmarks/procstat.py, beside this script

from vk_fargate.fleetd import guest, sandbox
from vk_fargate.fleetd.runtimes import microvm


def rss_mib(pid: int) -> tuple[float, float]:
    """QEMU's resident memory and its anonymous part (the file part is the page-cached
    vmlinux, shared by every guest on the machine)."""
    return procstat.status_kib(pid, "VmRSS") / 1024, procstat.status_kib(pid, "RssAnon") / 1024


async def one_boot(vm_dir: Path, args: argparse.Namespace) -> tuple[float, float, float, float]:
    spec: Any = {
        "id": f"bench-{vm_dir.name}",
        "runtime": "microvm",
        "vcpu_millis": args.vcpu_millis,
        "mem_mib": args.mem_mib,
        "restart_policy": "Never",
        "termination_grace_seconds": 5,
        "backoff_initial_seconds": 1.0,
        "backoff_max_seconds": 10.0,
        "init_containers": [],
        "containers": [
            {
                "name": "app",
                "argv": ["/bin/sh", "-c", "echo ready; sleep 1"],
                "env": {},
                "working_dir": None,
            }
        ],
        "netns": None,
        "cgroups": [],
        "network": None,
        "notify_socket": None,
    }
    vm_dir.mkdir()
    runtime = microvm.MicroVMRuntime(vm_dir, spec, sandbox.Status(vm_dir, spec))
    task = asyncio.create_task(runtime.run(), name="bench-microvm")
    peak, anon = 0.0, 0.0
    while not task.done():
        if runtime.qemu_pid is not None:
            rss = rss_mib(runtime.qemu_pid)
            peak, anon = max(peak, rss[0]), max(anon, rss[1])
        await asyncio.sleep(0.05)
    await task
    marks = runtime.timings
    if "first_output" not in marks:
        raise SystemExit(f"no output from the guest: {sandbox.read_json(vm_dir / 'status.json')}")
    start = marks["qemu_start"]
    return marks["init"] - start, marks["first_output"] - start, peak, anon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vcpu-millis", type=int, default=1000)
    parser.add_argument("--mem-mib", type=int, default=256)
    args = parser.parse_args()
    assets = guest.ensure_assets(guest.default_cache())
    print(
        f"kernel {assets.kernel_version}, accelerator {microvm.accelerator()}, "
        f"{guest.vcpus(args.vcpu_millis)} vCPU, "
        f"{args.mem_mib} MiB"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="microvm-bench-") as scratch:
        for run in range(args.runs):
            result = asyncio.run(one_boot(Path(scratch) / f"run{run}", args))
            print(
                f"run {run}: init {result[0]:5.2f}s  first output {result[1]:5.2f}s  "
                f"QEMU RSS {result[2]:6.1f} MiB (anonymous {result[3]:6.1f} MiB)"
            )
            results.append(result)
    for label, column in (("QEMU start -> /init", 0), ("QEMU start -> first output", 1)):
        values = [r[column] for r in results]
        print(f"{label:<28} median {statistics.median(values):5.2f}s  max {max(values):5.2f}s")
    for label, column in (("QEMU RSS (peak)", 2), ("  of which anonymous", 3)):
        values = [r[column] for r in results]
        print(
            f"{label:<28} median {statistics.median(values):6.1f} MiB  max {max(values):6.1f} MiB"
        )


if __name__ == "__main__":
    main()
