"""Benchmark: how long two replicas take to get over the death of the leader.

Usage: python benchmarks/failover.py [--pods 20] [--rounds 3]
Starts the control plane, fleetd and two `vk-fargate run` replicas with leader election
(each on its own loopback address, as each Deployment pod has its own IP), runs N pods,
then, round after round, SIGKILLs the leader and creates one new pod at that moment.
Prints per round the seconds from the kill until the standby holds the leader Lease,
until every node's kubelet endpoint has moved to it, until every node Lease has been
renewed by it, and until the new pod is Running; and how many times any node was seen
NotReady (polled every 0.5 s; the node-lifecycle controller's grace is 40 s). The killed
replica is started again as the next round's standby.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import client as k8s

from vk_fargate import settings
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.k8s import client

NAMESPACE = "failover"
HOME = "failover-home"
LEASE = "failover-bench"
SCHEDULER = "fargate-scheduler"
ADDRESSES = {"a": "127.0.0.2", "b": "127.0.0.3"}


def pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "failover"}},
        "spec": {
            "schedulerName": SCHEDULER,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}],
        },
    }


def replica(
    local: cluster.Cluster, fleet: devfleet.Fleet, identity: str, root: Path
) -> devprovider.Provider:
    address = ADDRESSES[identity]
    env = devprovider.environment(
        local, fleet, port=processes.free_ports(1)[0], cluster_name="failover"
    )
    env.update(
        {
            "POD_NAME": identity,
            "VK_FARGATE_NAMESPACE": HOME,
            "VK_FARGATE_LEADER_ELECT": "true",
            "VK_FARGATE_LEADER_LEASE": LEASE,
            "VK_FARGATE_WEBHOOK_REGISTER": "false",
            "VK_FARGATE_KUBELET_BIND": address,
            "VK_FARGATE_KUBELET_ADVERTISE_ADDRESS": address,
            "VK_FARGATE_PROFILES_FILE": str(devprovider.profiles_file(root, NAMESPACE)),
        }
    )
    return devprovider.Provider(env, root / f"provider-{identity}.log")


async def holder(api: k8s.ApiClient, name: str, namespace: str) -> tuple[str, object]:
    try:
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    except k8s.ApiException:
        return "", None
    return lease.spec.holder_identity or "", lease.spec.renew_time


async def round_trip(
    api: k8s.ApiClient, replicas: dict[str, devprovider.Provider], leader: str, n: int
) -> dict[str, float]:
    """Kill ``leader``; the seconds until each step of the takeover, and NotReady sightings."""
    core = k8s.CoreV1Api(api)
    standby = "b" if leader == "a" else "a"
    nodes = [p.spec.node_name for p in (await core.list_namespaced_pod(NAMESPACE)).items]
    renewed = {name: (await holder(api, name, "kube-node-lease"))[1] for name in nodes}
    replicas[leader].kill()
    killed = time.monotonic()
    await core.create_namespaced_pod(NAMESPACE, pod(f"after-{n}"))
    found: dict[str, float] = {"not_ready": 0}
    while len(found) < 5:
        now = time.monotonic() - killed
        if "lease" not in found and (await holder(api, LEASE, HOME))[0] == standby:
            found["lease"] = now
        listed = {n.metadata.name: n for n in (await core.list_node()).items}
        ours = [listed[name] for name in nodes if name in listed]
        for node in ours:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
            )
            found["not_ready"] += not ready
        moved = all(
            a.address == ADDRESSES[standby]
            for node in ours
            for a in node.status.addresses
            if a.type == "Hostname"
        )
        if "endpoints" not in found and moved:
            found["endpoints"] = now
        if "node_leases" not in found:
            current = [(await holder(api, name, "kube-node-lease"))[1] for name in nodes]
            if all(c != renewed[name] for c, name in zip(current, nodes, strict=True)):
                found["node_leases"] = now
        if "new_pod" not in found:
            new = await core.read_namespaced_pod(f"after-{n}", NAMESPACE)
            if new.status.phase == "Running":
                found["new_pod"] = now
        if now > 120:
            raise AssertionError(f"no takeover after 120 s: {found}")
        await asyncio.sleep(0.5)
    return found


async def main(count: int, rounds: int) -> None:
    bins = binaries.locate(settings.load())
    root = Path(tempfile.mkdtemp(prefix="vk-fargate-failover-"))
    async with (
        cluster.Cluster(bins) as local,
        devfleet.with_images(root, settings.load().cache) as fleet,
    ):
        api = await client.connect(local.kubeconfig)
        replicas = {i: replica(local, fleet, i, root) for i in ADDRESSES}
        results: list[dict[str, float]] = []
        try:
            core = k8s.CoreV1Api(api)
            for name in (HOME, NAMESPACE):
                await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
            while not (await core.list_namespaced_service_account(NAMESPACE)).items:
                await asyncio.sleep(0.2)
            await replicas["a"].start()
            while (await holder(api, LEASE, HOME))[0] != "a":
                await asyncio.sleep(0.2)
            await replicas["b"].start()
            for i in range(count):
                await core.create_namespaced_pod(NAMESPACE, pod(f"before-{i}"))
            while (
                sum(
                    p.status.phase == "Running"
                    for p in (await core.list_namespaced_pod(NAMESPACE)).items
                )
                < count
            ):
                await asyncio.sleep(0.5)
            leader = "a"
            for n in range(rounds):
                results.append(await round_trip(api, replicas, leader, n))
                await replicas[leader].start()  # back, as the standby
                leader = "b" if leader == "a" else "a"
            await core.delete_namespace(NAMESPACE)
            while [
                n
                for n in (await core.list_node()).items
                if (n.metadata.labels or {}).get("vk-fargate.io/cluster") == "failover"
            ]:
                await asyncio.sleep(0.5)
        finally:
            await api.close()
            for each in replicas.values():
                each.stop()
    print(f"pods before the first kill  {count} (+1 per round)")
    for n, found in enumerate(results, 1):
        print(
            f"round {n}: Lease taken {found['lease']:.1f}s, endpoints moved "
            f"{found['endpoints']:.1f}s, node Leases renewed {found['node_leases']:.1f}s, "
            f"new pod Running {found['new_pod']:.1f}s, NotReady sightings {found['not_ready']:.0f}"
        )
    for key in ("lease", "endpoints", "node_leases", "new_pod"):
        values = [r[key] for r in results]
        print(f"{key:<12} median {statistics.median(values):.1f}s  max {max(values):.1f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.pods, arguments.rounds))
