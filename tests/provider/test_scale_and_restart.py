"""Scaling, heartbeats under the real node-lifecycle controller, and restart safety."""

from __future__ import annotations

import asyncio
import collections

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from tests.provider.test_simple_web import deployment
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client as fleet_api

pytestmark = pytest.mark.e2e


async def _ns(api: k8s.ApiClient) -> str:
    return await conftest.namespace(api, "scale")


async def _scale(api: k8s.ApiClient, ns: str, replicas: int) -> None:
    await k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
        "simple-web", ns, {"spec": {"replicas": replicas}}
    )


async def _counts(api: k8s.ApiClient, fleet: devfleet.Fleet, ns: str) -> tuple[int, int, int, int]:
    """(Running pods, Ready fargate nodes, leases of those nodes, microVMs) for ``ns``."""
    core = k8s.CoreV1Api(api)
    pods = (await core.list_namespaced_pod(ns)).items
    names = {p.spec.node_name for p in pods if p.spec.node_name}
    nodes = [n for n in (await core.list_node()).items if n.metadata.name in names]
    ready = [
        n for n in nodes if {c.type: c.status for c in n.status.conditions}.get("Ready") == "True"
    ]
    leases = await k8s.CoordinationV1Api(api).list_namespaced_lease("kube-node-lease")
    with_lease = [n for n in nodes if n.metadata.name in {x.metadata.name for x in leases.items}]
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        vms = (await fleet_client.list_microvms({"namespace": ns})).items
    running = [p for p in pods if p.status.phase == "Running"]
    return len(running), len(ready), len(with_lease), len(vms)


async def _all_nodes_of(api: k8s.ApiClient) -> set[str]:
    nodes = await k8s.CoreV1Api(api).list_node(
        label_selector=f"vk-fargate.io/cluster={conftest.CLUSTER_NAME}"
    )
    return {n.metadata.name for n in nodes.items}


async def _nodes_of_live_pods(api: k8s.ApiClient, *, besides: str) -> set[str]:
    """The nodes of pods outside namespace ``besides`` that are meant to stay: not being
    deleted, in a namespace that is not being deleted. (Earlier tests delete their
    namespaces without waiting, so their pods and nodes may go while this test runs.)"""
    core = k8s.CoreV1Api(api)
    active = {
        ns.metadata.name
        for ns in (await core.list_namespace()).items
        if ns.status.phase == "Active" and ns.metadata.name != besides
    }
    return {
        p.spec.node_name
        for p in (await core.list_pod_for_all_namespaces()).items
        if p.metadata.namespace in active
        and p.spec.node_name
        and p.metadata.deletion_timestamp is None
        and p.status.phase == "Running"
    }


async def test_scale_to_20_then_to_0(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    ns = await _ns(api)
    before = await _all_nodes_of(api)
    await k8s.AppsV1Api(api).create_namespaced_deployment(ns, deployment("simple-web", 20))

    async def twenty() -> bool:
        return await _counts(api, fleet, ns) == (20, 20, 20, 20)

    await waiting.until(twenty, timeout=180, what="20 Running pods on 20 Ready nodes")
    ours = await _all_nodes_of(api) - before
    assert len(ours) == 20
    # Only this provider's nodes: other tests run providers of other clusters here too.
    others = await _nodes_of_live_pods(api, besides=ns) & await _all_nodes_of(api)
    await _scale(api, ns, 0)

    async def none_left() -> bool:
        pods = (await k8s.CoreV1Api(api).list_namespaced_pod(ns)).items
        return not pods and await _counts(api, fleet, ns) == (0, 0, 0, 0)

    await waiting.until(none_left, timeout=180, what="every pod, node, lease and microVM gone")
    after = await _all_nodes_of(api)
    assert not ours & after, "a node of this test's pods is left"
    # Other live pods keep their nodes (the deletions are bound to this test's pods).
    still_live = await _nodes_of_live_pods(api, besides=ns)
    assert others & still_live <= after
    await k8s.CoreV1Api(api).delete_namespace(ns)


async def test_restart_mid_creation_ends_with_no_orphan_and_no_duplicate(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    ns = await _ns(api)
    await k8s.AppsV1Api(api).create_namespaced_deployment(ns, deployment("simple-web", 20))

    async def some_started() -> bool:
        async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
            return len((await fleet_client.list_microvms({"namespace": ns})).items) >= 3

    await waiting.until(some_started, timeout=60, what="the first microVMs")
    provider.kill()
    await asyncio.sleep(1)
    await provider.start()

    async def twenty() -> bool:
        return await _counts(api, fleet, ns) == (20, 20, 20, 20)

    await waiting.until(
        twenty, timeout=240, what="20 pods, nodes, leases and microVMs after a restart"
    )
    pods = (await k8s.CoreV1Api(api).list_namespaced_pod(ns)).items
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        vms = (await fleet_client.list_microvms({"namespace": ns})).items
    assert sorted(vm.id for vm in vms) == sorted(p.metadata.uid for p in pods)
    await _scale(api, ns, 0)

    async def cleaned() -> bool:
        return await _counts(api, fleet, ns) == (0, 0, 0, 0)

    await waiting.until(cleaned, timeout=180, what="scale to 0 after the restart")
    await k8s.CoreV1Api(api).delete_namespace(ns)


async def test_a_restart_sends_no_event_again(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    """A restarted provider does not announce again what its predecessor announced: a
    container that did not restart was Started once (the kubelet's events too)."""
    ns = await _ns(api)
    await k8s.AppsV1Api(api).create_namespaced_deployment(ns, deployment("simple-web", 3))

    async def three() -> bool:
        return await _counts(api, fleet, ns) == (3, 3, 3, 3)

    await waiting.until(three, timeout=120, what="3 Running pods")
    provider.kill()
    await provider.start()
    await _scale(api, ns, 4)  # reconciled after the pods found at start (one queue, FIFO)

    async def four() -> bool:
        return await _counts(api, fleet, ns) == (4, 4, 4, 4)

    await waiting.until(four, timeout=120, what="a 4th pod Running after the restart")
    core = k8s.CoreV1Api(api)
    per_pod: collections.Counter[str] = collections.Counter()
    for reason in ("Created", "Started"):
        events = await core.list_namespaced_event(ns, field_selector=f"reason={reason}")
        for event in events.items:
            per_pod[f"{reason} {event.involved_object.name}"] += event.count or 1
    assert len(per_pod) == 8 and set(per_pod.values()) == {1}, per_pod
    await _scale(api, ns, 0)
    await waiting.until(
        lambda: _empty(api, fleet, ns), timeout=120, what="scale to 0 after the restart"
    )
    await core.delete_namespace(ns)


async def _empty(api: k8s.ApiClient, fleet: devfleet.Fleet, ns: str) -> bool:
    return await _counts(api, fleet, ns) == (0, 0, 0, 0)


async def test_nodes_stay_ready_for_three_minutes(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    """The real node-lifecycle controller (40 s grace) never marks a healthy node NotReady."""
    ns = await _ns(api)
    await k8s.AppsV1Api(api).create_namespaced_deployment(ns, deployment("simple-web", 3))

    async def three() -> bool:
        return await _counts(api, fleet, ns) == (3, 3, 3, 3)

    await waiting.until(three, timeout=120, what="3 Ready nodes")
    core = k8s.CoreV1Api(api)
    loop = asyncio.get_running_loop()
    end = loop.time() + 180
    checks = 0
    while loop.time() < end:
        pods = (await core.list_namespaced_pod(ns)).items
        for pod in pods:
            node = await core.read_node(pod.spec.node_name)
            conditions = {c.type: c.status for c in node.status.conditions}
            taints = {t.key for t in node.spec.taints or []}
            assert conditions["Ready"] == "True", node.metadata.name
            assert "node.kubernetes.io/unreachable" not in taints, node.metadata.name
            assert pod.status.phase == "Running"
        checks += 1
        await asyncio.sleep(10)
    assert checks >= 17
    await core.delete_namespace(ns)
