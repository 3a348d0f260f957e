"""Benchmark: what real images cost a host: pull, unpack, memory and disk per pod.

Usage: python benchmarks/image_pull.py [--pods 10]

Starts a local registry filled with the local images and a fleetd that pulls from
it (process runtime, runc). Prints:

- nginx cold pull (an empty store) and warm pull (Always: the manifest again, every
  blob already present), then its one unpack per host and a container's root over it
  (an overlay), each the median of 3 runs, through fleetd's own ImageStore and rootfs;
- ``--pods`` microVMs of nginx created at once: create -> running p50/max (IfNotPresent,
  image present), and per running pod on the host the memory of its shim plus any runc
  process beside it (the supervision beyond the container's own processes): RSS; the
  private part, USS, which is what one more pod costs; PSS, which adds its share of the
  pages it shares with the shim template (whose own RSS, once per host, is printed
  too); and the disk of its bundle (its own files: the overlay's upper folder, not the
  shared copy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import procstat  # benchmarks/procstat.py, beside this script

from vk_fargate import settings
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client, models
from vk_fargate.fleetd import config, imagestore, rootfs


async def _pulls(registry: devregistry.Registry, root: Path) -> dict[str, float]:
    mirror = config.RegistryHost(mirror=f"http://{registry.host}")
    times: dict[str, list[float]] = {
        "cold pull": [], "warm pull": [], "unpack (once per host)": [], "container root": []
    }  # fmt: skip
    for run in range(3):
        store = imagestore.ImageStore(root / f"store{run}", {"docker.io": mirror})
        began = time.monotonic()
        pulled = await store.ensure("nginx", "Always")
        times["cold pull"].append(time.monotonic() - began)
        began = time.monotonic()
        await store.ensure("nginx", "Always")
        times["warm pull"].append(time.monotonic() - began)
        began = time.monotonic()
        shared = await store.unpacked(pulled)
        times["unpack (once per host)"].append(time.monotonic() - began)
        began = time.monotonic()
        rootfs.make(shared / "rootfs", root / f"bundle{run}")
        times["container root"].append(time.monotonic() - began)
        rootfs.unmount_one(root / f"bundle{run}")
    return {k: statistics.median(v) for k, v in times.items()}


def _children(pid: int, program: str) -> list[int]:
    """The children of ``pid`` running ``program``."""
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(line.split()[0]) for line in out.stdout.splitlines() if program in line]


def _in_mount(path: Path, bundles: Path) -> bool:
    """Whether ``path`` lies in a container's mounted root (the shared copy, read through)."""
    relative = path.relative_to(bundles).parts
    return (
        len(relative) > 2
        and relative[1] == "rootfs"
        and os.path.ismount(bundles / relative[0] / "rootfs")
    )


async def _pods(fleet: devfleet.Fleet, count: int, vm_root: Path) -> dict[str, float]:
    spec = models.MicroVMSpec.model_validate(
        {"vcpu_millis": 250, "mem_mib": 512, "containers": [{"name": "web", "image": "nginx"}]}
    )
    async with client.FleetClient(fleet.url, fleet.token) as api:
        ids = [f"bench-{n}" for n in range(count)]
        began = {i: time.monotonic() for i in ids}
        await asyncio.gather(*(api.put_microvm(i, spec) for i in ids))
        took: dict[str, float] = {}
        while len(took) < count:
            for i in ids:
                if i in took:
                    continue
                vm = await api.get_microvm(i)
                if vm.status.containers and vm.status.containers[0].state == "running":
                    took[i] = time.monotonic() - began[i]
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        shims = []
        for i in ids:
            status = (vm_root / i / "status.json").read_text()
            shims.append(int(status.split('"shim_pid": ')[1].split(",")[0]))
        supervision, private, proportional = [], [], []
        for shim in shims:
            processes = [shim, *_children(shim, "runc")]  # runc: only where it stays beside
            supervision.append(sum(procstat.status_kib(p, "VmRSS") for p in processes))
            private.append(sum(procstat.private_kib(p) for p in processes))
            proportional.append(sum(procstat.proportional_kib(p) for p in processes))
        template, _ = procstat.shims(fleet.process.pid)
        bundles = vm_root / ids[0] / "bundles"
        disk = sum(
            f.lstat().st_blocks * 512
            for f in bundles.rglob("*")
            if f.is_file() and not f.is_symlink() and not _in_mount(f, bundles)
        )
        for i in ids:
            await api.delete_microvm(i, grace_seconds=0)
    values = sorted(took.values())
    return {
        "create->running p50 s": statistics.median(values),
        "create->running max s": values[-1],
        "shim+runc RSS per pod MiB": statistics.median(supervision) / 1024,
        "shim+runc private (USS) per pod MiB": statistics.median(private) / 1024,
        "shim+runc proportional (PSS) per pod MiB": statistics.median(proportional) / 1024,
        "shim template RSS, once per host MiB": (
            procstat.status_kib(template, "VmRSS") / 1024 if template else 0.0
        ),
        "bundle disk per pod MiB": disk / 2**20,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        registry = await devregistry.start_filled(root / "registry", settings.load().cache)
        try:
            for name, seconds in (await _pulls(registry, root)).items():
                print(f"nginx {name}: {seconds * 1000:.0f} ms")
            fleet = await devfleet.start(root / "fleet", registry=registry.host)
            try:
                vm_root = root / "fleet" / "state" / "microvms"
                for name, value in (await _pods(fleet, args.pods, vm_root)).items():
                    print(f"{args.pods} nginx pods, {name}: {value:.2f}")
            finally:
                fleet.stop()
        finally:
            registry.stop()


if __name__ == "__main__":
    asyncio.run(main())
