"""Races at the backend seam, with the real reconcilers and the real API server and the
in-memory fleet of ``fakebackend`` (virtual-kubelet's ``node/`` scenario tests are the
model): a pod deleted while its microVM is being made leaks nothing; a microVM missing
from a stale cache fails its pod only when the fleet itself says it is gone."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest as provider_conftest
from tests.scenario import conftest, fakebackend
from vk_fargate import app
from vk_fargate.fargate import nodes as fargate_nodes

pytestmark = pytest.mark.e2e
JSON = dict[str, Any]


def sleeper(name: str, **spec: Any) -> JSON:
    container = {"name": "main", "image": "busybox:1", "command": ["sleep", "3600"]}
    return provider_conftest.pod(name, container, conftest.SCHEDULER, **spec)


async def nodes_of(api: k8s.ApiClient, uid: str) -> list[str]:
    """Nodes the provider made for pod ``uid``."""
    listed = await k8s.CoreV1Api(api).list_node(
        label_selector=f"{fargate_nodes.CLUSTER_LABEL}={conftest.CLUSTER}"
    )
    return [
        n.metadata.name
        for n in listed.items
        if (n.metadata.annotations or {}).get(fargate_nodes.POD_UID_ANNOTATION) == uid
    ]


async def pod_gone(api: k8s.ApiClient, ns: str, name: str) -> bool:
    try:
        await k8s.CoreV1Api(api).read_namespaced_pod(name, ns)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


async def nothing_left(
    api: k8s.ApiClient, fake: fakebackend.FakeMicroVMs, ns: str, name: str, uid: str
) -> None:
    async def clean() -> bool:
        return (
            uid not in fake.vms and not await nodes_of(api, uid) and await pod_gone(api, ns, name)
        )

    await waiting.until(clean, timeout=30, what="the pod, its microVM and its node to be gone")


async def running(api: k8s.ApiClient, ns: str, name: str) -> Any:
    async def probe() -> Any:
        pod = await k8s.CoreV1Api(api).read_namespaced_pod(name, ns)
        return pod if pod.status.phase == "Running" else None

    return await waiting.until(probe, timeout=30, what=f"pod {name} to run")


async def test_a_pod_deleted_while_its_microvm_is_made_leaves_nothing(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "race")
    fake.gate.clear()
    try:
        uid = (await core.create_namespaced_pod(ns, sleeper("early"))).metadata.uid
        await waiting.until(
            lambda: _async(("put", uid) in fake.calls), what="the provider to ask for a microVM"
        )
        await core.delete_namespaced_pod("early", ns)  # unbound: gone at once
        await waiting.until(lambda: pod_gone(api, ns, "early"), what="the pod to go")
    finally:
        fake.gate.set()  # ... and the fleet's answer comes after all
    await waiting.until(
        lambda: _async(("placed", uid) in fake.calls), what="the microVM to be made"
    )
    await nothing_left(api, fake, ns, "early", uid)
    assert ("delete", uid) in fake.calls
    await core.delete_namespace(ns)


async def test_a_pod_deleted_before_its_microvm_runs_leaves_nothing(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "race")
    fake.boot.clear()
    try:
        uid = (await core.create_namespaced_pod(ns, sleeper("pending"))).metadata.uid

        async def bound() -> bool:
            return bool((await core.read_namespaced_pod("pending", ns)).spec.node_name)

        await waiting.until(bound, what="the pod to be bound to its node")
        assert fake.vms[uid].status.state == "pending"
        await core.delete_namespaced_pod("pending", ns)
        await nothing_left(api, fake, ns, "pending", uid)
    finally:
        fake.boot.set()
    await core.delete_namespace(ns)


async def test_a_microvm_missing_from_a_stale_cache_fails_its_pod_only_when_the_fleet_says(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "stale")
    uid = (await core.create_namespaced_pod(ns, sleeper("kept"))).metadata.uid
    await running(api, ns, "kept")

    # The provider's copy of the fleet lacks the microVM (a relist that missed it); the
    # fleet has it: the pod is looked up, not declared gone.
    asked = len(fake.calls)
    provider.world.vms.pop(uid)
    provider.queue.add(uid)
    await waiting.until(
        lambda: _async(("get", uid) in fake.calls[asked:]), what="the fleet to be asked"
    )
    await waiting.until(
        lambda: _async(uid in provider.world.vms), what="the fleet's answer to fill the cache"
    )
    pod = await core.read_namespaced_pod("kept", ns)
    assert pod.status.phase == "Running", pod.status

    # Now the fleet has lost it as well: that, and only that, fails the pod.
    fake.lose(uid)
    provider.world.vms.pop(uid)
    provider.queue.add(uid)

    async def failed() -> Any:
        pod = await core.read_namespaced_pod("kept", ns)
        return pod if pod.status.phase == "Failed" else None

    pod = await waiting.until(failed, timeout=30, what="the pod to fail")
    assert pod.status.reason == "NotFound"
    await core.delete_namespace(ns)


async def _async(value: bool) -> bool:
    return value
