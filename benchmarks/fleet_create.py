"""Benchmark: creating many microVMs on a local fleetd (process runtime).

Usage: python benchmarks/fleet_create.py [--count 200] [--concurrency 20]

Starts its own fleetd (two big hosts), then creates ``--count`` microVMs running
``sh -c 'echo hi; sleep 5'`` (busybox, restart_policy Never) through FleetClient,
at most ``--concurrency`` in flight: a slot is held from the PUT until the microVM is
``running``, as seen on the event stream (resumed from the list's cursor). Prints the
throughput (microVMs brought to running per second, first PUT to last running), p50 and
p99 create-to-running latency (PUT sent -> ``running`` event received), fleetd's peak RSS
(sampled VmRSS and the kernel's VmHWM) and the peak total PSS of the shims with their
template (the proportional share: pages the forked shims share with the template are
counted once, not once per shim); then deletes every microVM and stops fleetd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import procstat  # benchmarks/procstat.py, beside this script

from vk_fargate import settings
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client, models

SAMPLE_INTERVAL = 0.25  # seconds between RSS samples
HOSTS = [
    {"id": f"metal-{zone[-1]}", "zone": zone, "vcpus": 128, "mem_mib": 524288}
    for zone in devfleet.ZONES
]
SPEC = models.MicroVMSpec(
    vcpu_millis=250,
    mem_mib=512,
    restart_policy="Never",
    termination_grace_seconds=0,
    labels={"benchmark": "fleet_create"},
    containers=[
        models.Container(name="app", image="busybox", command=["sh", "-c", "echo hi; sleep 5"])
    ],
)


@dataclasses.dataclass
class Memory:
    fleetd_peak_kib: int = 0
    shims_peak_kib: int = 0
    shims_at_peak: int = 0
    shims_max_count: int = 0


async def _sample(fleetd_pid: int, memory: Memory) -> None:
    while True:
        memory.fleetd_peak_kib = max(
            memory.fleetd_peak_kib, procstat.status_kib(fleetd_pid, "VmRSS")
        )
        template, shims = procstat.shims(fleetd_pid)
        total = sum(procstat.proportional_kib(pid) for pid in shims)
        if template is not None:
            total += procstat.proportional_kib(template)
        memory.shims_max_count = max(memory.shims_max_count, len(shims))
        if total > memory.shims_peak_kib:
            memory.shims_peak_kib, memory.shims_at_peak = total, len(shims)
        await asyncio.sleep(SAMPLE_INTERVAL)


async def _watch(
    api: client.FleetClient, since: int, waiting: dict[str, asyncio.Future[str]]
) -> None:
    """Resolve each microVM's future with the first of running/stopped/failed seen."""
    async for event in api.events(since):
        if event.type != "microvm" or event.microvm is None:
            continue
        future = waiting.get(event.microvm.id)
        state = event.microvm.status.state
        if future is not None and not future.done() and state in ("running", "stopped", "failed"):
            future.set_result(state)


async def run(count: int, concurrency: int, root: Path) -> None:
    async with devfleet.with_images(root, settings.load().cache, hosts=HOSTS) as fleet:
        await _run(fleet, count, concurrency)


async def _run(fleet: devfleet.Fleet, count: int, concurrency: int) -> None:
    memory = Memory()
    async with client.FleetClient(fleet.url, fleet.token) as api:
        ids = [f"bench-{i:04d}" for i in range(count)]
        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future[str]] = {i: loop.create_future() for i in ids}
        latencies: dict[str, float] = {}
        outcome: dict[str, str] = {}
        slots = asyncio.Semaphore(concurrency)
        cursor = (await api.list_microvms()).cursor
        watcher = asyncio.create_task(_watch(api, cursor, waiting))
        sampler = asyncio.create_task(_sample(fleet.process.pid, memory))

        async def create(vm_id: str) -> None:
            async with slots:
                sent = time.monotonic()
                await api.put_microvm(vm_id, SPEC)
                outcome[vm_id] = await asyncio.wait_for(waiting[vm_id], timeout=120)
                latencies[vm_id] = time.monotonic() - sent

        began = time.monotonic()
        await asyncio.gather(*(create(i) for i in ids))
        elapsed = time.monotonic() - began
        # One more second of samples: the shims live ~5 s, so their peak may come late.
        await asyncio.sleep(1.0)
        watcher.cancel()
        sampler.cancel()
        fleetd_hwm = procstat.status_kib(fleet.process.pid, "VmHWM")

        deleting = time.monotonic()
        removal = asyncio.Semaphore(concurrency)

        async def delete(vm_id: str) -> None:
            async with removal:
                await api.delete_microvm(vm_id, grace_seconds=0)

        await asyncio.gather(*(delete(i) for i in ids))
        while (await api.list_microvms({"benchmark": "fleet_create"})).items:
            await asyncio.sleep(0.2)
        delete_elapsed = time.monotonic() - deleting
        for task in (watcher, sampler):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    values = sorted(latencies.values())
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    running = sum(1 for state in outcome.values() if state == "running")
    print(
        f"microVMs created               {count} ({concurrency} in flight), "
        f"{running} reached running"
    )
    print(
        f"throughput                     {count / elapsed:6.1f} microVMs/s ({elapsed:.2f}s total)"
    )
    print(
        f"create -> running latency      p50 {cuts[49] * 1000:6.0f} ms   "
        f"p99 {cuts[98] * 1000:6.0f} ms   max {values[-1] * 1000:6.0f} ms"
    )
    print(
        f"fleetd RSS at peak             {memory.fleetd_peak_kib / 1024:6.1f} MiB sampled "
        f"(VmHWM {fleetd_hwm / 1024:.1f} MiB)"
    )
    per_shim = memory.shims_peak_kib / max(memory.shims_at_peak, 1) / 1024
    print(
        f"shims' PSS, total at peak      {memory.shims_peak_kib / 1024:6.1f} MiB "
        f"over {memory.shims_at_peak} shims ({per_shim:.1f} MiB each; "
        f"at most {memory.shims_max_count} shims at once)"
    )
    print(f"delete all -> all gone         {delete_elapsed:6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as root:
        asyncio.run(run(options.count, options.concurrency, Path(root)))


if __name__ == "__main__":
    main()
