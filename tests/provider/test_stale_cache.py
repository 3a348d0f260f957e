"""The pod reconciler never fails a pod from a cache that may be behind: a bound pod
whose microVM the provider has not seen yet (its event stream reconnecting, say) is
looked up in the fleet, not declared gone. A Failed pod is final: it never runs again.
The other way round, a microVM the cache still holds but the fleet has forgotten (the
answer to its DELETE was lost) does not hold up the deletion of its pod.

Driven directly, on the session's control plane and fleet, with a world that lacks the
microVM; the pod uses a scheduler name of its own, so the session's provider leaves it
alone."""

from __future__ import annotations

import contextlib

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.fleetd import helpers
from tests.provider import conftest
from vk_fargate import errors, settings, world
from vk_fargate.controllers import pods
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import client as fleet_api
from vk_fargate.k8s import events, kube
from vk_fargate.scheduler import scheduling

pytestmark = pytest.mark.e2e
CLUSTER = "stale-cache"


def _reconciler(
    door: kube.Kube, fleet: fleet_api.FleetClient, state: world.World
) -> pods.PodReconciler:
    cfg = settings.ProviderSettings(cluster_name=CLUSTER)
    recorder = events.Recorder(door, component="kubelet", instance="test")
    scheduler = scheduling.Scheduler(
        door, fleet, recorder, state, cfg, retry=lambda _uid, _delay: None
    )
    return pods.PodReconciler(door, fleet, recorder, state, scheduler)


async def test_a_microvm_missing_from_the_cache_is_looked_up_not_declared_gone(
    api: k8s.ApiClient, fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "stale")
    # Not the session provider's (its webhook and profile take fargate-scheduler's pods).
    pod = conftest.shell_pod("bound", "exec sleep 300", "stale-scheduler")
    pod["spec"].update(nodeName="fargate-ip-elsewhere")
    created = await core.create_namespaced_pod(ns, pod)
    uid = created.metadata.uid
    door = kube.Kube(api)
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        spec = helpers.spec(helpers.shell("main", "exec sleep 300"))
        spec.labels[fargate_nodes.CLUSTER_LABEL] = CLUSTER
        await fleet_client.put_microvm(uid, spec)
        state = world.World()
        state.pod_cache.store(await door.get(f"/api/v1/namespaces/{ns}/pods/bound"))
        state.fleet_synced.set()  # ... but its copy of the fleet lacks this microVM
        try:
            await _reconciler(door, fleet_client, state).reconcile(uid)
            after = await core.read_namespaced_pod("bound", ns)
            assert after.status.phase != "Failed", after.status
            assert uid in state.vms, "the fleet's answer went into the cache"
        finally:
            await fleet_client.delete_microvm(uid, grace_seconds=0)
            selector = f"{fargate_nodes.CLUSTER_LABEL}={CLUSTER}"
            for node in (await core.list_node(label_selector=selector)).items:
                await core.delete_node(node.metadata.name)
                leases = k8s.CoordinationV1Api(api)
                with contextlib.suppress(k8s.ApiException):
                    await leases.delete_namespaced_lease(node.metadata.name, "kube-node-lease")
            await core.delete_namespace(ns)


async def test_a_deleted_pod_whose_microvm_the_fleet_forgot_is_deleted_at_once(
    api: k8s.ApiClient, fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "stale")
    pod = conftest.shell_pod("leaving", "exec sleep 300", "stale-scheduler")
    pod["spec"].update(nodeName="fargate-ip-elsewhere")
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    await core.delete_namespaced_pod("leaving", ns, grace_period_seconds=30)  # Terminating
    door = kube.Kube(api)
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        spec = helpers.spec(helpers.shell("main", "exec sleep 300"))
        spec.labels[fargate_nodes.CLUSTER_LABEL] = CLUSTER
        vm = await fleet_client.put_microvm(uid, spec)
        await fleet_client.delete_microvm(uid, grace_seconds=0)  # its answer "lost"

        async def forgotten() -> bool:
            try:
                await fleet_client.get_microvm(uid)
            except errors.NotFound:
                return True
            return False

        await waiting.until(forgotten, what="the fleet to forget the microVM")
        state = world.World()
        state.pod_cache.store(await door.get(f"/api/v1/namespaces/{ns}/pods/leaving"))
        state.vms[uid] = vm  # ... which the cache still holds, its event not seen yet
        state.fleet_synced.set()
        try:
            await _reconciler(door, fleet_client, state).reconcile(uid)
            left = (await core.list_namespaced_pod(ns)).items
            assert not left, "the pod waits for an event that will not come"
        finally:
            await core.delete_namespace(ns)
