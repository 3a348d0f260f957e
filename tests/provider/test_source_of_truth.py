"""The provider reads what the API server says, not a copy of what it sent: a pod's
status or a node's Ready condition that someone else changes is written right again,
by the provider as users run it (the session's ``vk-fargate run``)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest

pytestmark = pytest.mark.e2e


async def _running(core: k8s.CoreV1Api, ns: str, name: str) -> k8s.V1Pod:
    async def ready() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod(name, ns)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        return pod if pod.status.phase == "Running" and conditions.get("Ready") == "True" else None

    return await waiting.until(ready, timeout=90, what=f"{ns}/{name} Running and Ready")


def _condition(conditions: list[Any] | None, kind: str) -> Any:
    return next((c for c in conditions or [] if c.type == kind), None)


async def test_a_pod_status_someone_else_changed_is_corrected(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "truth")
    await core.create_namespaced_pod(ns, conftest.shell_pod("steady", "exec sleep 300"))
    await _running(core, ns, "steady")
    # Another client (a controller with a bug, a user) says the pod is not ready.
    wrong = {"type": "Ready", "status": "False", "reason": "Tampered", "message": "not so"}
    await core.patch_namespaced_pod_status(
        "steady", ns, {"status": {"conditions": [wrong], "phase": "Pending"}}
    )

    async def corrected() -> bool:
        pod = await core.read_namespaced_pod("steady", ns)
        ready = _condition(pod.status.conditions, "Ready")
        return bool(pod.status.phase == "Running" and ready.status == "True" and not ready.reason)

    await waiting.until(corrected, timeout=20, what="the provider to write the status again")
    await core.delete_namespace(ns)


async def test_a_node_made_not_ready_by_someone_else_is_ready_again_at_once(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "truth")
    await core.create_namespaced_pod(ns, conftest.shell_pod("steady", "exec sleep 300"))
    node = (await _running(core, ns, "steady")).spec.node_name
    # What the node-lifecycle controller writes when it misses a kubelet, say during a
    # failover; the provider's next status report is up to 5 minutes away.
    unknown = {
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
    }
    await core.patch_node_status(node, {"status": {"conditions": [unknown]}})

    async def ready_again() -> bool:
        found = await core.read_node(node)
        ready = _condition(found.status.conditions, "Ready")
        return bool(ready.status == "True" and ready.reason == "KubeletReady")

    await waiting.until(ready_again, timeout=20, what="the provider to report the node Ready")
    await core.delete_namespace(ns)
