"""Benchmark: from a Service table's PUT to the rule in effect in every pod of a cluster.

Usage: python benchmarks/service_rules.py [--pods 10] [--filler 0] [--rounds 5]

Starts its own fleetd (needs root: network namespaces, runc, iptables) and a registry,
a busybox ``httpd`` backend and ``--pods`` busybox client microVMs of one cluster.
Each round first puts a table whose ClusterIP port has no endpoint (refused inside the
pods), then, with one thread per client namespace connecting to that port every
millisecond from inside it (``setns``), puts the table with the backend as endpoint:
the time from the PUT sent to the first connection accepted, per pod, is when the rule
took effect there. ``--filler`` adds that many other Service ports (two endpoints each)
to the table, as a bigger cluster has. Prints per round the PUT's round trip and, over
all pods, the latest effect after the PUT was sent and after it was answered (negative:
before the answer: a PUT answers once every namespace is programmed); then the round
trip of the same table put again (nothing to write).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from vk_fargate import settings
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import client, models

CLUSTER = "bench"
CIDR = "10.96.250.0/24"
CLUSTER_IP = "10.96.250.50"
CLONE_NEWNET = 0x40000000
LABELS = {fargate_nodes.CLUSTER_LABEL: CLUSTER}


def spec(script: str) -> models.MicroVMSpec:
    return models.MicroVMSpec.model_validate(
        {"vcpu_millis": 250, "mem_mib": 512, "labels": LABELS,
         "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", script]}]}
    )  # fmt: skip


def table(backend: str | None, filler: int) -> models.ServiceTable:
    ports = [{"name": "bench/web:http", "cluster_ip": CLUSTER_IP, "port": 80,
              "endpoints": [f"{backend}:80"] if backend else []}]  # fmt: skip
    for i in range(filler):
        ip = f"10.96.250.{100 + i % 150}"
        ports.append({"name": f"bench/filler-{i}:p", "cluster_ip": ip, "port": 1000 + i,
                      "endpoints": ["192.0.2.10:80", "192.0.2.11:80"]})  # fmt: skip
    return models.ServiceTable.model_validate({"service_cidrs": [CIDR], "ports": ports})


def first_accept(netns: str, stop: threading.Event, found: dict[str, float]) -> None:
    """In ``netns`` (this thread only), connect to the ClusterIP every millisecond
    until one is accepted; note when."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)
    while not stop.is_set():
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect((CLUSTER_IP, 80))
            except OSError:
                time.sleep(0.001)
                continue
            found[netns] = time.monotonic()
            return


async def run(pods: int, filler: int, rounds: int, root: Path) -> None:
    async with (
        devfleet.with_images(root, settings.load().cache) as fleet,
        client.FleetClient(fleet.url, fleet.token, timeout=300) as api,
    ):
        backend_id, ids = "bench-backend", [f"bench-client-{i:03d}" for i in range(pods)]
        www = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"
        await api.put_microvm(backend_id, spec(www))
        await asyncio.gather(*(api.put_microvm(i, spec("exec sleep 100000")) for i in ids))
        vms = {}
        for vm_id in [backend_id, *ids]:
            while (vm := await api.get_microvm(vm_id)).status.state != "running":
                await asyncio.sleep(0.2)
            vms[vm_id] = vm
        namespaces = [p.name for i in ids for p in Path("/run/netns").glob(f"vkf-*-{i}")]
        assert len(namespaces) == pods, namespaces
        with_backend = table(vms[backend_id].status.private_ip, filler)
        print(f"{pods} client pods, {len(with_backend.ports)} Service ports in the table")
        for n in range(rounds):
            await api.put_services(CLUSTER, table(None, filler))
            found: dict[str, float] = {}
            stop = threading.Event()
            threads = [
                threading.Thread(target=first_accept, args=(ns, stop, found), daemon=True)
                for ns in namespaces
            ]
            for thread in threads:
                thread.start()
            await asyncio.sleep(0.3)  # every thread in its namespace, being refused
            assert not found, "the ClusterIP answered before the PUT"
            sent = time.monotonic()
            await api.put_services(CLUSTER, with_backend)
            answered = time.monotonic()
            deadline = answered + 30
            while len(found) < pods and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            stop.set()
            for thread in threads:
                thread.join()
            assert len(found) == pods, f"{pods - len(found)} pods never reached the backend"
            latest = max(found.values())
            print(
                f"round {n + 1}: PUT round trip {(answered - sent) * 1000:7.1f} ms; "
                f"in effect in all {pods} pods {(latest - sent) * 1000:7.1f} ms after the PUT "
                f"was sent, {(latest - answered) * 1000:+7.1f} ms after its answer "
                f"(median pod {(statistics.median(found.values()) - sent) * 1000:.1f} ms)"
            )
        again = []
        for _ in range(rounds):
            began = time.monotonic()
            await api.put_services(CLUSTER, with_backend)
            again.append(time.monotonic() - began)
        print(
            f"the same table again: PUT round trip median {statistics.median(again) * 1000:.1f} ms"
        )
        await asyncio.gather(*(api.delete_microvm(i, grace_seconds=0) for i in [backend_id, *ids]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--filler", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="service-rules-bench-") as root:
        asyncio.run(run(options.pods, options.filler, options.rounds, Path(root)))


if __name__ == "__main__":
    main()
