"""Gates, as the kubelet and kube-scheduler keep them: a pod with ``schedulingGates`` is
not placed until they are gone; a pod with ``readinessGates`` is Ready only once each
gate's condition, set by its own controller, is True."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest as provider_conftest
from tests.scenario import fakebackend, test_races
from vk_fargate import app

pytestmark = pytest.mark.e2e
GATE = "example.com/lb-registered"


async def test_a_scheduling_gated_pod_waits_until_its_gates_are_gone(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "gated")
    gated = test_races.sleeper("gated", schedulingGates=[{"name": "example.com/quota"}])
    uid = (await core.create_namespaced_pod(ns, gated)).metadata.uid
    await core.create_namespaced_pod(ns, test_races.sleeper("free"))
    await test_races.running(api, ns, "free")  # the provider has looked at both by now
    pod = await core.read_namespaced_pod("gated", ns)
    assert pod.spec.node_name is None and ("put", uid) not in fake.calls
    scheduled = {c.type: c for c in pod.status.conditions}["PodScheduled"]
    assert (scheduled.status, scheduled.reason) == ("False", "SchedulingGated")

    await core.patch_namespaced_pod("gated", ns, {"spec": {"schedulingGates": None}})
    await test_races.running(api, ns, "gated")
    await core.delete_namespace(ns)


async def test_readiness_gates_hold_ready_until_their_condition_is_true(
    api: k8s.ApiClient, provider: app.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "readygate")
    body = test_races.sleeper("web", readinessGates=[{"conditionType": GATE}])
    await core.create_namespaced_pod(ns, body)
    await test_races.running(api, ns, "web")

    async def ready(wanted: str) -> dict[str, k8s.V1PodCondition] | None:
        pod = await core.read_namespaced_pod("web", ns)
        found = {c.type: c for c in pod.status.conditions or []}
        containers = "ContainersReady" in found and found["ContainersReady"].status == "True"
        return found if containers and found["Ready"].status == wanted else None

    held = await waiting.until(lambda: ready("False"), what="containers ready, Ready held")
    assert held["Ready"].reason == "ReadinessGatesNotReady"
    assert held["Ready"].message == (
        f'corresponding condition of pod readiness gate "{GATE}" does not exist.'
    )
    await core.patch_namespaced_pod_status(
        "web", ns, {"status": {"conditions": [{"type": GATE, "status": "True"}]}}
    )
    opened = await waiting.until(lambda: ready("True"), what="Ready once the gate is True")
    assert opened[GATE].status == "True", "the gate's condition is kept"
    await core.delete_namespace(ns)
