"""The seed's simple-web on Fargate nodes: node per pod, status, logs, events, scaling."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest

pytestmark = pytest.mark.e2e


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": "simple-nginx-app"}
    script = "i=0; while :; do i=$((i+1)); echo line $i; sleep 1; done"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels | conftest.for_scheduler()},
                "spec": {
                    "schedulerName": "fargate-scheduler",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {"name": "web", "image": "busybox", "command": ["sh", "-c", script]}
                    ],
                },
            },
        },
    }


def run(kubectl: list[str], *args: str, timeout: float = 30) -> str:
    done = subprocess.run(
        [*kubectl, *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout


async def _namespace(api: k8s.ApiClient) -> str:
    return await conftest.namespace(api, "fargate-workload")


async def _fargate_nodes(core: k8s.CoreV1Api) -> list[k8s.V1Node]:
    nodes = await core.list_node(label_selector=f"vk-fargate.io/cluster={conftest.CLUSTER_NAME}")
    return list(nodes.items)


async def test_simple_web_runs_on_a_fargate_node(
    api: k8s.ApiClient, provider: conftest.Provider, kubectl: list[str]
) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    ns = await _namespace(api)
    await apps.create_namespaced_deployment(ns, deployment("simple-web"))

    async def running_pod() -> k8s.V1Pod | None:
        pods = (await core.list_namespaced_pod(ns)).items
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = await waiting.until(running_pod, timeout=60, what="simple-web Running")
    node_name = pod.spec.node_name
    ip = pod.status.pod_ip
    assert node_name == f"fargate-ip-{ip.replace('.', '-')}.eu-central-1.compute.internal"
    assert pod.status.host_ip == ip
    assert pod.metadata.annotations["CapacityProvisioned"] == "0.25vCPU 0.5GB"
    status = pod.status.container_statuses[0]
    assert status.ready and status.state.running.started_at is not None
    assert status.container_id.startswith("vkfargate://")
    ready = {c.type: c for c in pod.status.conditions}["Ready"]
    assert ready.status == "True"
    assert ready.reason is None, "Ready=True keeps no reason from its False days"

    node = await core.read_node(node_name)
    assert node.metadata.labels["eks.amazonaws.com/compute-type"] == "fargate"
    assert node.metadata.labels["topology.kubernetes.io/zone"].startswith("eu-central-1")
    assert [
        (t.key, t.value, t.effect) for t in node.spec.taints or [] if t.key.startswith("eks")
    ] == [("eks.amazonaws.com/compute-type", "fargate", "NoSchedule")]
    assert node.status.allocatable["pods"] == "1"

    async def ready() -> bool:
        current = await core.read_node(node_name)
        conditions = {c.type: c.status for c in current.status.conditions}
        taints = [t.key for t in current.spec.taints or []]
        return conditions.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints

    await waiting.until(ready, timeout=60, what="the node Ready without the not-ready taint")
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(node_name, "kube-node-lease")
    assert lease.spec.lease_duration_seconds == 40
    assert lease.metadata.owner_references[0].name == node_name

    wide = run(kubectl, "get", "nodes", "-o", "wide")
    assert node_name in wide and ip in wide and "Ready" in wide
    pods_wide = run(kubectl, "-n", ns, "get", "po", "-o", "wide")
    assert "Running" in pods_wide and ip in pods_wide and node_name in pods_wide

    await asyncio.sleep(3)
    logs = run(kubectl, "-n", ns, "logs", pod.metadata.name)
    assert logs.startswith("line 1\nline 2\n")
    follow = await asyncio.create_subprocess_exec(
        *kubectl,
        "-n",
        ns,
        "logs",
        "-f",
        "--tail=2",
        pod.metadata.name,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert follow.stdout is not None
        lines = [(await follow.stdout.readline()).decode() for _ in range(4)]
    finally:
        follow.kill()
        await follow.wait()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 4)), lines

    described = run(kubectl, "-n", ns, "describe", "po", pod.metadata.name)
    assert "CapacityProvisioned: 0.25vCPU 0.5GB" in described
    for text in ("Successfully assigned", "fargate-scheduler", "Started container web"):
        assert text in described, text

    # Deleting the namespace removes pods, microVM, node and lease.
    await core.delete_namespace(ns)

    async def node_gone() -> bool:
        return node_name not in [n.metadata.name for n in await _fargate_nodes(core)]

    await waiting.until(node_gone, timeout=60, what="the node to go with its pod")

    # The lease goes right after its node (a separate request, so a reader can see the
    # two apart for a moment; a renewal that raced the deletion is the garbage
    # collector's, by the lease's owner reference).
    async def lease_gone() -> bool:
        leases = await k8s.CoordinationV1Api(api).list_namespaced_lease("kube-node-lease")
        return node_name not in [lease.metadata.name for lease in leases.items]

    await waiting.until(lease_gone, timeout=30, what="the node's lease to go with it")


def _json(kubectl: list[str], *args: str) -> Any:
    return json.loads(run(kubectl, *args, "-o", "json"))


async def test_metrics_and_probes(
    api: k8s.ApiClient, provider: conftest.Provider, kubectl: list[str]
) -> None:
    """/metrics shows pods by phase, fleet call latency and the create-to-Running histogram."""
    import aiohttp

    core = k8s.CoreV1Api(api)
    ns = await _namespace(api)
    await k8s.AppsV1Api(api).create_namespaced_deployment(ns, deployment("simple-web"))

    async def running() -> bool:
        pods = (await core.list_namespaced_pod(ns)).items
        return bool(pods) and pods[0].status.phase == "Running"

    await waiting.until(running, timeout=60, what="a Running pod")
    port = provider.env["VK_FARGATE_METRICS_PORT"]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        async with http.get("/readyz") as ready:
            assert ready.status == 200
        async with http.get("/healthz") as healthy:
            assert healthy.status == 200
        async with http.get("/metrics") as scraped:
            text = await scraped.text()
    assert 'vkfargate_pods{phase="Running"}' in text
    assert "vkfargate_pod_create_to_running_seconds_count" in text
    assert 'vkfargate_fleet_request_seconds_count{call="PUT /v1/microvms/{id}"}' in text
    assert f'vkfargate_running_vcpu{{namespace="{ns}",profile="e2e"}} 0.25' in text
    assert "vkfargate_lease_renewal_lag_seconds" in text
    # 0.25 vCPU x $0.04656 + 0.5 GB x $0.00511 (eu-central-1 table) = $0.014195 an hour
    assert f'vkfargate_running_cost_usd_per_hour{{namespace="{ns}",profile="e2e"}} 0.014195' in text
    assert 'vkfargate_watch_restarts_total{watch="pods"}' in text
    await core.delete_namespace(ns)
