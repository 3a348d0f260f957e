"""Benchmark: how long an EndpointSlice change takes to reach the Service rules inside
Fargate pods, and what the rules cost in memory.

Usage: sudo python benchmarks/endpointslice_rules.py [--pods 10] [--changes 100] [--services 100]
Starts a control plane, fleetd (``netns`` networking: needs root), the provider and a
registry on loopback, runs ``--pods`` busybox pods, then:

- changes the endpoint of one selectorless Service ``--changes`` times (a PATCH of its
  EndpointSlice) and, for each change, times from the PATCH being sent to the new
  address showing in the nat table of the first pod's network namespace and of the
  last one (``iptables-save``, polled every 2 ms): p50/p99 of both;
- adds ``--services`` Services of 2 ports with 3 ready endpoints each, and reads the
  kernel's slab memory and fleetd's RSS before and after they are in every pod:
  the design's cost per pod (rules live in each pod's namespace) and per host.

It prints the load average before and after, as everything shares this machine.
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

from kubernetes_asyncio import client as k8s

from vk_fargate import settings
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.k8s import client

NAMESPACE = "bench"
POLL = 0.002


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def nat_rules(netns: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout


def slab_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    raise RuntimeError("no Slab line in /proc/meminfo")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pod_netns(uid: str) -> str:
    """The network namespace of pod ``uid`` (fleetd names it ``vkf-<prefix><uid>``)."""
    found = [n.name for n in Path("/run/netns").iterdir() if n.name.endswith(uid)]
    if len(found) != 1:
        raise RuntimeError(f"pod {uid}: namespaces {found}")
    return found[0]


def endpoint_slice(name: str, addresses: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def service(name: str) -> dict[str, object]:
    ports = [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
    ]
    return {"metadata": {"name": name}, "spec": {"ports": ports}}


async def until_in(netns: str, text: str, start: float) -> float:
    while text not in nat_rules(netns):
        if time.perf_counter() - start > 60:
            raise RuntimeError(f"{text} not in {netns} after 60 s")
        await asyncio.sleep(POLL)
    return time.perf_counter() - start


async def changes(api: k8s.ApiClient, spaces: list[str], count: int) -> tuple[list[float], ...]:
    core, discovery = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
    await core.create_namespaced_service(NAMESPACE, service("moving"))
    await discovery.create_namespaced_endpoint_slice(
        NAMESPACE, endpoint_slice("moving", ["10.244.0.1"])
    )
    await until_in(spaces[-1], "10.244.0.1", time.perf_counter())
    first, last = [], []
    for i in range(2, count + 2):
        address = f"10.244.{i // 250}.{i % 250 + 1}"
        start = time.perf_counter()
        await discovery.patch_namespaced_endpoint_slice(
            "moving-1", NAMESPACE, endpoint_slice("moving", [address])
        )
        first.append(await until_in(spaces[0], address, start))
        last.append(await until_in(spaces[-1], address, start))
    return first, last


async def memory(api: k8s.ApiClient, spaces: list[str], count: int, fleetd: int) -> tuple[int, ...]:
    core, discovery = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
    await asyncio.sleep(2)
    slab_before, rss_before = slab_kib(), rss_kib(fleetd)
    for n in range(count):
        name = f"svc-{n}"
        await core.create_namespaced_service(NAMESPACE, service(name))
        addresses = [f"10.245.{n // 80}.{(n % 80) * 3 + k + 1}" for k in range(3)]
        await discovery.create_namespaced_endpoint_slice(NAMESPACE, endpoint_slice(name, addresses))
    marker = f"10.245.{(count - 1) // 80}.{((count - 1) % 80) * 3 + 3}"
    for netns in spaces:
        await until_in(netns, marker, time.perf_counter())
    await asyncio.sleep(2)
    rules = nat_rules(spaces[0]).count("\n-A ")
    return slab_kib() - slab_before, rss_kib(fleetd) - rss_before, rules


async def main(pods: int, count: int, services: int, registry_host: str) -> None:
    bins = binaries.locate(settings.load())
    root = Path(tempfile.mkdtemp(prefix="vk-fargate-bench-"))
    async with cluster.Cluster(bins) as local:
        fleet = await devfleet.start(root / "fleet", registry=registry_host)
        env = devprovider.environment(
            local, fleet, port=processes.free_ports(1)[0], cluster_name="bench"
        )
        env["VK_FARGATE_PROFILES_FILE"] = str(devprovider.profiles_file(root, NAMESPACE))
        provider = devprovider.Provider(env, root / "provider.log")
        await provider.start()
        api = await client.connect(local.kubeconfig)
        try:
            core = k8s.CoreV1Api(api)
            await core.create_namespace({"metadata": {"name": NAMESPACE}})
            while not (await core.list_namespaced_service_account(NAMESPACE)).items:
                await asyncio.sleep(0.2)
            for n in range(pods):
                pod = {
                    "metadata": {"name": f"client-{n}"},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
                        ],
                    },
                }
                await core.create_namespaced_pod(NAMESPACE, pod)
            uids = []
            for n in range(pods):
                while (
                    p := await core.read_namespaced_pod(f"client-{n}", NAMESPACE)
                ).status.phase != "Running":
                    await asyncio.sleep(0.2)
                uids.append(p.metadata.uid)
            spaces = [pod_netns(uid) for uid in uids]
            load_before = os.getloadavg()
            first, last = await changes(api, spaces, count)
            slab, rss, rules = await memory(api, spaces, services, fleet.process.pid)
            load_after = os.getloadavg()
        finally:
            await api.close()
            provider.stop()
            fleet.stop()
    ms = 1000.0
    print(f"EndpointSlice change -> rule in the pod's namespace, {count} changes, {pods} pods")
    print("                         p50       p99")
    for label, times in (("first pod", first), (f"all {pods} pods", last)):
        p50, p99 = statistics.median(times) * ms, percentile(times, 0.99) * ms
        print(f"  {label:<20} {p50:7.0f} ms {p99:7.0f} ms")
    print(f"memory of {services} Services x 2 ports x 3 endpoints ({rules} nat rules a pod)")
    print(f"  kernel slab, all {pods} pods  {slab:8d} KiB  ({slab / pods:.0f} KiB a pod)")
    print(f"  fleetd RSS (per host)      {rss:8d} KiB")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")


async def with_registry(pods: int, count: int, services: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        registry = await devregistry.start_filled(Path(scratch), settings.load().cache)
        try:
            await main(pods, count, services, registry.host)
        finally:
            registry.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--services", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(with_registry(args.pods, args.changes, args.services))
