"""Two live replicas, as the chart runs them: one leads (schedules, heartbeats, owns the
nodes' kubelet endpoints), the other stands by; when the leader dies the standby takes
over without the cluster noticing: nodes stay Ready, logs keep flowing, new pods run.

Each replica gets its own loopback address (127.0.0.2 and 127.0.0.3), as each pod of
the Deployment has its own IP, so a node's kubelet endpoint visibly moves on failover.
They use their own scheduler name and cluster name, so the session's provider leaves
their pods alone, and register no webhooks (they would replace the session's).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import parser

from tests import kubectl, waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.fleet import client as fleet_api

pytestmark = pytest.mark.e2e
SCHEDULER = "failover-scheduler"
LEASE = "failover-leader"
ADDRESSES = {"a": "127.0.0.2", "b": "127.0.0.3"}


class Replica(devprovider.Provider):
    def __init__(self, identity: str, env: dict[str, str], log: Path) -> None:
        super().__init__(env, log)
        self.identity = identity
        self.address = env["VK_FARGATE_KUBELET_ADVERTISE_ADDRESS"]
        self.metrics_url = f"http://127.0.0.1:{env['VK_FARGATE_METRICS_PORT']}/metrics"

    def new_ports(self) -> None:
        """Fresh loopback ports for a restart: the old ones may have been handed out as
        another socket's ephemeral port while this replica was down."""
        metrics, webhook = processes.free_ports(2)
        self.env["VK_FARGATE_METRICS_PORT"] = str(metrics)
        self.env["VK_FARGATE_WEBHOOK_PORT"] = str(webhook)
        self.env["VK_FARGATE_WEBHOOK_URL"] = f"https://127.0.0.1:{webhook}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with aiohttp.ClientSession() as http, http.get(self.metrics_url) as response:
            text = await response.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
async def replicas(
    api: k8s.ApiClient,
    local_cluster: cluster.Cluster,
    fleet: devfleet.Fleet,
    tmp_path: Path,
) -> AsyncIterator[tuple[str, dict[str, Replica]]]:
    home = await conftest.namespace(api, "failover-home")
    made = {}
    for identity, address in ADDRESSES.items():
        port = processes.free_ports(1)[0]
        env = devprovider.environment(local_cluster, fleet, port=port, cluster_name="failover")
        env.update(
            {
                "POD_NAME": f"vk-fargate-{identity}",
                "VK_FARGATE_NAMESPACE": home,
                "VK_FARGATE_LEADER_ELECT": "true",
                "VK_FARGATE_LEADER_LEASE": LEASE,
                "VK_FARGATE_SCHEDULER_NAME": SCHEDULER,
                "VK_FARGATE_PROFILES_FILE": str(conftest.profiles_file(tmp_path, SCHEDULER)),
                "VK_FARGATE_WEBHOOK_REGISTER": "false",
                "VK_FARGATE_KUBELET_BIND": address,
                "VK_FARGATE_KUBELET_ADVERTISE_ADDRESS": address,
            }
        )
        made[identity] = Replica(identity, env, tmp_path / f"provider-{identity}.log")
    try:
        yield home, made
    finally:
        for replica in made.values():
            replica.stop()
        await k8s.CoreV1Api(api).delete_namespace(home)


def _pod(name: str, script: str) -> dict[str, object]:
    return conftest.shell_pod(name, script, SCHEDULER)


async def _holder(api: k8s.ApiClient, home: str) -> str | None:
    try:
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(LEASE, home)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    holder: str | None = lease.spec.holder_identity
    return holder


def _endpoint(node: k8s.V1Node) -> tuple[str, int]:
    host = next(a.address for a in node.status.addresses if a.type == "Hostname")
    return host, node.status.daemon_endpoints.kubelet_endpoint.port


def _ready(node: k8s.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _logs(local: cluster.Cluster, ns: str, pod: str) -> str:
    return kubectl.run(local.kubeconfig, "-n", ns, "logs", pod)


async def test_the_standby_takes_over_a_dead_leader_without_a_node_going_not_ready(
    api: k8s.ApiClient,
    local_cluster: cluster.Cluster,
    fleet: devfleet.Fleet,
    replicas: tuple[str, dict[str, Replica]],
) -> None:
    home, by_id = replicas
    a, b = by_id["a"], by_id["b"]
    core = k8s.CoreV1Api(api)
    await a.start()

    async def a_leads() -> bool:
        return await _holder(api, home) == "vk-fargate-a"

    await waiting.until(a_leads, timeout=30, what="a to take the leader lease")
    await b.start()
    ns = await conftest.namespace(api, "failover")
    await core.create_namespaced_pod(
        ns, _pod("before", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 1; done")
    )

    async def running(name: str) -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase == "Running" else None

    before = await waiting.until(lambda: running("before"), timeout=90, what="'before' Running")
    node_name = before.spec.node_name
    assert _endpoint(await core.read_node(node_name))[0] == a.address

    # The standby watches everything but acts on nothing.
    a_now, b_now = await a.samples(), await b.samples()
    assert a_now[("vkfargate_leader", ())] == 1 and b_now[("vkfargate_leader", ())] == 0
    created = [
        key
        for key in b_now
        if key[0] == "vkfargate_fleet_request_seconds_count"
        and dict(key[1]).get("call", "").startswith("PUT /v1/microvms")
    ]
    assert created == [], "the standby created a microVM"
    assert ("vkfargate_pods", (("phase", "Running"),)) not in b_now  # counted by the leader only

    # The leader dies without releasing its lease.
    a.kill()
    killed = time.monotonic()
    not_ready: list[float] = []

    async def b_leads_and_owns_the_node() -> bool:
        node = await core.read_node(node_name)
        if not _ready(node):
            not_ready.append(time.monotonic() - killed)
        return await _holder(api, home) == "vk-fargate-b" and _endpoint(node)[0] == b.address

    await waiting.until(b_leads_and_owns_the_node, timeout=60, what="b to lead and own the node")
    moved = time.monotonic() - killed
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(node_name, "kube-node-lease")
    renewed = lease.spec.renew_time

    async def heartbeat() -> bool:
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(node_name, "kube-node-lease")
        node = await core.read_node(node_name)
        if not _ready(node):
            not_ready.append(time.monotonic() - killed)
        return bool(lease.spec.renew_time > renewed)

    await waiting.until(heartbeat, timeout=30, what="b to renew the node's Lease")
    print(f"\nfailover: node endpoint moved {moved:.1f}s after the kill")
    assert not_ready == [], f"node {node_name} went NotReady during the failover"
    assert (await running("before")) is not None
    assert "tick" in _logs(local_cluster, ns, "before")  # through the node's new endpoint

    # The new leader schedules; nothing was created twice.
    await core.create_namespaced_pod(ns, _pod("after", "echo hello from after; exec sleep 3600"))
    after = await waiting.until(lambda: running("after"), timeout=90, what="'after' Running")
    assert _endpoint(await core.read_node(after.spec.node_name))[0] == b.address
    assert (await b.samples())[("vkfargate_leader", ())] == 1

    # A graceful stop hands the lease over at once; the restarted a takes it.
    a.new_ports()
    await a.start()
    b.stop()

    async def a_leads_again() -> bool:
        node = await core.read_node(node_name)
        return await _holder(api, home) == "vk-fargate-a" and _endpoint(node)[0] == a.address

    await waiting.until(a_leads_again, timeout=30, what="a to lead again after b released")
    assert "hello from after" in _logs(local_cluster, ns, "after")
    await core.delete_namespace(ns)

    async def cleaned() -> bool:
        nodes = await core.list_node(label_selector="vk-fargate.io/cluster=failover")
        async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
            vms = await fleet_client.list_microvms({"namespace": ns})
        return not nodes.items and not vms.items

    await waiting.until(
        cleaned, timeout=90, what="both nodes and microVMs removed by the new leader"
    )
