"""Benchmark: exec and port streams through a local fleetd (process runtime).

Usage: python benchmarks/fleet_streams.py [--execs 100] [--mib 256]

Starts its own fleetd and registry, runs one microVM (busybox: ``nc`` serving zeros on
port 9000, as fast as it writes them), then through FleetClient directly:
``--execs`` sequential ``exec true`` round trips (upgrade to ERROR ``exit_code 0`` and
the WebSocket closed), printing p50 and p99; and a port stream to port 9000 read for
``--mib`` MiB, printing its throughput. Deletes the microVM and stops fleetd.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from vk_fargate import settings
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client, models
from vk_fargate.fleetd import streams

SPEC = models.MicroVMSpec(
    vcpu_millis=1000,
    mem_mib=512,
    restart_policy="Never",
    termination_grace_seconds=0,
    containers=[
        models.Container(
            name="app",
            image="busybox",
            command=["sh", "-c", "while true; do nc -l -p 9000 < /dev/zero; done"],
        )
    ],
)


async def _exec_true(api: client.FleetClient, vm_id: str) -> float:
    began = time.perf_counter()
    async with api.exec(vm_id, "app", ["true"], stdin=False, tty=False) as ws:
        async for message in ws:
            channel, payload = streams.unframe(message.data)
            if channel == streams.ERROR:
                assert payload == streams.exited(0), payload
    return time.perf_counter() - began


async def _read_port(api: client.FleetClient, vm_id: str, mib: int) -> float:
    wanted, got = mib * 2**20, 0
    async with api.port(vm_id, 9000) as ws:
        began = time.perf_counter()
        async for message in ws:
            channel, payload = streams.unframe(message.data)
            assert channel == streams.STDOUT, (channel, payload[:200])
            got += len(payload)
            if got >= wanted:
                break
        elapsed = time.perf_counter() - began
    return got / 2**20 / elapsed


async def run(execs: int, mib: int, root: Path) -> None:
    async with (
        devfleet.with_images(root, settings.load().cache) as fleet,
        client.FleetClient(fleet.url, fleet.token) as api,
    ):
        vm_id = "bench-streams"
        await api.put_microvm(vm_id, SPEC)
        deadline = time.monotonic() + 120
        while (await api.get_microvm(vm_id)).status.state != "running":
            if time.monotonic() > deadline:
                raise SystemExit("the microVM did not run within 120 s")
            await asyncio.sleep(0.2)
        await _exec_true(api, vm_id)  # warm: the first exec pays for runc's page cache
        times = sorted([await _exec_true(api, vm_id) for _ in range(execs)])
        print(f"exec true x{execs}: p50 {statistics.median(times) * 1000:.1f} ms, "
              f"p99 {times[int(len(times) * 0.99) - 1] * 1000:.1f} ms")  # fmt: skip
        print(f"port stream: {await _read_port(api, vm_id, mib):.1f} MiB/s over {mib} MiB")
        await api.delete_microvm(vm_id, grace_seconds=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=100)
    parser.add_argument("--mib", type=int, default=256)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-streams-") as root:
        asyncio.run(run(options.execs, options.mib, Path(root)))


if __name__ == "__main__":
    main()
