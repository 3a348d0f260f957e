"""Benchmark: N pods through the whole stack (control plane + fleetd + provider).

Usage: python benchmarks/provider_pods.py [--pods 200]
With the images in a local registry (pulled once, then cached on the host; each pod's
containers run by runc), creates one Deployment of N replicas (busybox `sleep`) for
fargate-scheduler and prints: pods/s to Running, p50/p99 create-to-Running latency
(pod creationTimestamp, from the API server, to the Ready condition's transition,
which the provider stamps as it writes it: when a watch could first see it), API
requests per pod made by the provider, the provider's peak RSS, and the time to scale
to 0.
In between, it scrapes every node's ``/metrics/resource`` as metrics-server does (each
node's own address and port, 10 at a time, two rounds) and prints the round's time and
the per-node latency, checking each answer carries its pod's container metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import procstat  # benchmarks/procstat.py, beside this script
from kubernetes_asyncio import client as k8s
from prometheus_client import parser as prometheus_parser

from vk_fargate import settings
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.k8s import client

NAMESPACE = "bench"


def requests_made(log: Path) -> int:
    """The provider logs its request counter on exit (see app.Provider.stop)."""
    for line in reversed(log.read_text().splitlines()):
        if "API requests:" in line:
            return int(line.rsplit("API requests:", 1)[1].split()[0])
    return -1


SCRAPERS = 10  # metrics-server scrapes nodes in parallel


async def requests_by_kind(metrics_port: str) -> dict[tuple[str, str], float]:
    """The provider's API requests so far, by (verb, resource), from its /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        text = await response.text()
    found: dict[tuple[str, str], float] = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        if family.name == "vkfargate_kube_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["verb"], sample.labels["resource"])
                    found[key] = sample.value
    return found


async def scrape_round(
    local: cluster.Cluster, nodes: list[k8s.V1Node]
) -> tuple[float, list[float]]:
    """One metrics-server round over ``nodes``: its seconds and each node's latency."""
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    tls.load_cert_chain(local.layout.pem("admin.crt"), local.layout.pem("admin.key"))
    gate = asyncio.Semaphore(SCRAPERS)
    latencies: list[float] = []

    async def one(http: aiohttp.ClientSession, node: k8s.V1Node) -> None:
        host = next(a.address for a in node.status.addresses if a.type == "Hostname")
        url = f"https://{host}:{node.status.daemon_endpoints.kubelet_endpoint.port}"
        async with gate:
            began = time.monotonic()
            async with http.get(f"{url}/metrics/resource", ssl=tls) as response:
                text = await response.text()
            latencies.append(time.monotonic() - began)
        if response.status != 200 or "container_cpu_usage_seconds_total{" not in text:
            raise AssertionError(f"{node.metadata.name}: {response.status} {text[:200]}")

    began = time.monotonic()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http, n) for n in nodes))
    return time.monotonic() - began, sorted(latencies)


async def main(count: int, registry_host: str) -> None:
    bins = binaries.locate(settings.load())
    root = Path(tempfile.mkdtemp(prefix="vk-fargate-bench-"))
    hosts = [
        {"id": f"metal-{z[-1]}", "zone": z, "vcpus": 256, "mem_mib": 1 << 20}
        for z in devfleet.ZONES
    ]
    async with cluster.Cluster(bins) as local:
        fleet = await devfleet.start(root / "fleet", hosts=hosts, registry=registry_host)
        port = processes.free_ports(1)[0]
        env = devprovider.environment(local, fleet, port=port, cluster_name="bench")
        env["VK_FARGATE_PROFILES_FILE"] = str(devprovider.profiles_file(root, NAMESPACE))
        provider = devprovider.Provider(env, root / "provider.log")
        await provider.start()
        assert provider.process is not None
        pid = provider.process.pid
        api = await client.connect(local.kubeconfig)
        try:
            core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
            await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
            while not [
                sa
                for sa in (await core.list_namespaced_service_account(NAMESPACE)).items
                if sa.metadata.name == "default"
            ]:
                await asyncio.sleep(0.2)
            labels = {"app": "bench"}
            body = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "bench"},
                "spec": {
                    "replicas": count,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "schedulerName": "fargate-scheduler",
                            "terminationGracePeriodSeconds": 1,
                            "containers": [
                                {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}
                            ],
                        },
                    },
                },
            }
            began = time.monotonic()
            await apps.create_namespaced_deployment(NAMESPACE, body)
            while True:
                pods = (await core.list_namespaced_pod(NAMESPACE)).items
                ready = [p for p in pods if p.status.phase == "Running"]
                if len(ready) >= count:
                    break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - began
            latencies = []
            for pod in pods:
                created: datetime.datetime = pod.metadata.creation_timestamp
                ready_at = next(
                    c.last_transition_time for c in pod.status.conditions if c.type == "Ready"
                )
                latencies.append((ready_at - created).total_seconds())
            latencies.sort()
            ours = [
                n
                for n in (await core.list_node()).items
                if (n.metadata.labels or {}).get("vk-fargate.io/cluster") == "bench"
            ]
            before_scrape = procstat.status_kib(pid, "VmHWM") / 1024
            rounds = [await scrape_round(local, ours) for _ in range(2)]
            peak = procstat.status_kib(pid, "VmHWM") / 1024
            began = time.monotonic()
            await apps.patch_namespaced_deployment_scale(
                NAMESPACE, "bench", {"spec": {"replicas": 0}}
            )
            while (await core.list_namespaced_pod(NAMESPACE)).items or [
                n
                for n in (await core.list_node()).items
                if (n.metadata.labels or {}).get("vk-fargate.io/cluster") == "bench"
            ]:
                await asyncio.sleep(0.5)
            teardown = time.monotonic() - began
            breakdown = await requests_by_kind(env["VK_FARGATE_METRICS_PORT"])
        finally:
            await api.close()
            provider.stop()
            fleet.stop()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"pods                      {count}")
    print(f"all Running after         {elapsed:.1f}s  ({count / elapsed:.1f} pods/s)")
    print(
        f"create->Running latency   p50 {statistics.median(latencies):.1f}s  p99 {p99:.1f}s "
        "(API server timestamps, 1 s resolution)"
    )
    print(
        f"provider API requests     {requests_made(provider.log) / count:.1f} per pod "
        "(create to Running, then scale to 0)"
    )
    for i, (seconds, each) in enumerate(rounds, 1):
        p99_scrape = each[min(len(each) - 1, int(len(each) * 0.99))]
        print(
            f"/metrics/resource round {i} {len(each)} nodes in {seconds:.2f}s ({SCRAPERS} at a "
            f"time): p50 {statistics.median(each) * 1000:.0f} ms  p99 {p99_scrape * 1000:.0f} ms"
        )
    print(f"provider peak RSS         {peak:.0f} MiB ({before_scrape:.0f} MiB before scraping)")
    print(f"scale to 0 (pods+nodes)   {teardown:.1f}s")
    print("provider API requests per pod, by verb and resource (whole run):")
    for (verb, resource), n in sorted(breakdown.items(), key=lambda item: -item[1]):
        if n / count >= 0.05:
            print(f"  {verb:<6} {resource:<22} {n / count:5.2f}")


async def with_registry(count: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        registry = await devregistry.start_filled(Path(scratch), settings.load().cache)
        try:
            await main(count, registry.host)
        finally:
            registry.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(with_registry(arguments.pods))
