"""A reused address never costs a live pod its node (issue: CI deleted other tests' nodes).

Node names come from microVM addresses, and a subnet hands a freed address out again.
Here the fleet has exactly one free address, so pod B gets pod A's address while A's
node still exists, its cleanup pending. The reconcilers run in this process, step by
step in the order that lost B's node before (B placed, then A's cleanup), against the
real API server and a real fleetd.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.fleetd import helpers
from tests.provider import conftest
from vk_fargate import errors, settings, world
from vk_fargate.controllers import pods as pod_reconciler
from vk_fargate.devcluster import cluster
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fleet import client as fleet_api
from vk_fargate.k8s import client, events, kube
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.scheduler import scheduling

pytestmark = pytest.mark.e2e
CLUSTER = "name-reuse"
REGION = "eu-central-1"
SCHEDULER = "name-reuse-scheduler"  # not the session provider's: these pods are ours
PROFILE = fargate_profiles.Profile(name="reuse", selectors=[{"namespace": "reuse-*"}])
USABLE = 11  # addresses of a /28 that a subnet hands out (AWS reserves 5)


class Stack:
    """The provider's pod path, in process: world, scheduler and pod reconciler."""

    def __init__(self, api: kube.Kube, fleet: fleet_api.FleetClient) -> None:
        self.api = api
        self.fleet = fleet
        self.world = world.World()
        self.world.fleet_synced.set()
        self.retries: list[str] = []
        cfg = settings.ProviderSettings(
            region=REGION, cluster_name=CLUSTER, scheduler_name=SCHEDULER
        )
        recorder = events.Recorder(api, component="kubelet", instance="test")
        self.scheduler = scheduling.Scheduler(
            api,
            fleet,
            recorder,
            self.world,
            cfg,
            retry=lambda uid, _delay: self.retries.append(uid),
            profiles=lambda: [PROFILE],
        )
        self.pods = pod_reconciler.PodReconciler(api, fleet, recorder, self.world, self.scheduler)

    async def reconcile(self, uid: str) -> None:
        """One reconcile of ``uid``, with the world's microVM as the fleet has it now."""
        try:
            self.world.vms[uid] = await self.fleet.get_microvm(uid)
        except errors.NotFound:
            self.world.vms.pop(uid, None)
        await self.pods.reconcile(uid)

    async def pod(self, namespace: str, name: str) -> kube.JSON:
        found = await self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        self.world.pod_cache.store(found)
        return found


def owner(node: kube.JSON) -> str | None:
    """The pod UID a virtual node says it serves."""
    annotations = node["metadata"].get("annotations") or {}
    return annotations.get(fargate_nodes.POD_UID_ANNOTATION)


@pytest.fixture
async def small_fleet(
    tmp_path: Path, registry: devregistry.Registry
) -> AsyncIterator[devfleet.Fleet]:
    """A fleetd whose only subnet is a /28: 11 addresses."""
    net = next(devfleet.free_subnets(1)[0].subnets(new_prefix=28))
    subnets = [{"id": "subnet-tiny", "cidr": str(net), "zone": "eu-central-1a"}]
    hosts = [{"id": "metal-a", "zone": "eu-central-1a", "vcpus": 64, "mem_mib": 262144}]
    running = await devfleet.start(
        tmp_path / "fleet", subnets=subnets, hosts=hosts, registry=registry.host
    )
    try:
        yield running
    finally:
        running.stop()


async def test_a_pod_given_a_just_freed_address_never_loses_its_node(
    local_cluster: cluster.Cluster, api: k8s.ApiClient, small_fleet: devfleet.Fleet
) -> None:
    ns = await conftest.namespace(api, "reuse")
    raw = kube.Kube(await client.connect(local_cluster.kubeconfig))
    fleet = fleet_api.FleetClient(small_fleet.url, small_fleet.token)
    stack = Stack(raw, fleet)
    try:
        # Fill all but one address of the subnet with microVMs of no pod.
        for _ in range(USABLE - 1):
            await fleet.put_microvm(helpers.new_id(), helpers.spec(helpers.shell("f", "sleep 600")))
        sleeper = {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
        for name in ("a", "b"):
            manifest = conftest.pod(name, sleeper, SCHEDULER)
            await raw.create(f"/api/v1/namespaces/{ns}/pods", manifest)

        # Pod A is placed: the last free address, its node named after it.
        a = await stack.pod(ns, "a")
        a_uid = a["metadata"]["uid"]
        await stack.reconcile(a_uid)
        a = await stack.pod(ns, "a")
        node_name = a["spec"]["nodeName"]
        a_node = await raw.get(k8s_nodes.path(node_name))
        assert owner(a_node) == a_uid

        # A is deleted; its microVM goes and frees the address; A's node remains for now.
        await raw.delete(
            f"/api/v1/namespaces/{ns}/pods/a", {"gracePeriodSeconds": 0, "kind": "DeleteOptions"}
        )
        stack.world.pod_cache.remove(a)
        await stack.reconcile(a_uid)  # stops the microVM
        await waiting.until(lambda: helpers.forgotten(fleet, a_uid), what="A's microVM gone")

        # Pod B gets A's address (the only one free) while A's node still holds the name.
        b = await stack.pod(ns, "b")
        b_uid = b["metadata"]["uid"]
        await stack.reconcile(b_uid)
        b_vm = await fleet.get_microvm(b_uid)
        assert fargate_nodes.node_name(b_vm.status.private_ip or "", REGION) == node_name

        # A's cleanup runs now (late, as after a restart or a long queue), then B again.
        await stack.reconcile(a_uid)
        await stack.reconcile(b_uid)
        b = await stack.pod(ns, "b")
        assert b["spec"].get("nodeName") == node_name
        try:
            b_node = await raw.get(k8s_nodes.path(node_name))
        except errors.KubeError as exc:
            raise AssertionError(f"live pod B's node {node_name} was deleted") from exc
        assert owner(b_node) == b_uid, "B runs on a node made for A"
        assert b_node["metadata"]["uid"] != a_node["metadata"]["uid"]
        lease = await raw.get(k8s_nodes.lease_path(node_name))
        assert lease["metadata"]["ownerReferences"][0]["uid"] == b_node["metadata"]["uid"]
        assert b_uid in stack.retries and a_uid in stack.retries  # B waited, A was looked at

        # A stale cleanup of A (a retry on an old view that still has A's node under the
        # name) must leave B's node and Lease alone: deletions are bound to A's node UID.
        stack.world.node_cache.remove(b_node)
        stack.world.node_cache.store(a_node)
        await stack.pods.reconcile(a_uid)
        b_node_after = await raw.get(k8s_nodes.path(node_name))
        assert b_node_after["metadata"]["uid"] == b_node["metadata"]["uid"]
        await raw.get(k8s_nodes.lease_path(node_name))
        assert (await stack.pod(ns, "b"))["metadata"]["uid"] == b_uid
    finally:
        await k8s.CoreV1Api(api).delete_namespace(ns)
        for name in list(stack.world.nodes):
            with contextlib.suppress(errors.KubeError):
                await raw.delete(k8s_nodes.path(name))
        await fleet.close()
        await raw.close()
