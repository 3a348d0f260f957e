"""Probes through the real stack: readiness keeps a pod out of its Service's endpoints
until it passes (Ready and ContainersReady follow), and a liveness probe that starts
failing restarts the container with the kubelet's events."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest

pytestmark = pytest.mark.e2e

# busybox's httpd: /ready appears after 6 s; /cgi-bin/health answers 500 after 14 s.
SCRIPT = r"""
mkdir -p /www/cgi-bin
cat > /www/cgi-bin/health <<'EOF'
#!/bin/sh
if [ -e /tmp/broken ]; then printf 'Status: 500 Internal Server Error\r\n\r\n'
else printf 'Content-Type: text/plain\r\n\r\nok'; fi
EOF
chmod +x /www/cgi-bin/health
httpd -p 8080 -h /www
sleep 6; touch /www/ready
sleep 8; touch /tmp/broken
sleep 1000
"""
LABELS = {"app": "probed"}


def _pod() -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "busybox",
        "command": ["sh", "-c", SCRIPT],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {
            "httpGet": {"path": "/cgi-bin/health", "port": 8080},
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    }
    pod = conftest.pod("probed", container)
    pod["metadata"]["labels"] |= LABELS
    return pod


async def _endpoint_ready(api: k8s.ApiClient, ns: str, ip: str) -> bool | None:
    """The pod's endpoint's ``ready`` in the Service's EndpointSlices (None: absent)."""
    slices = await k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=probed"
    )
    for found in slices.items:
        for endpoint in found.endpoints or []:
            if ip in endpoint.addresses:
                return bool(endpoint.conditions.ready)
    return None


async def test_readiness_gates_endpoints_and_liveness_restarts(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "probes")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probed"},
        "spec": {"selector": LABELS, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    await core.create_namespaced_service(ns, service)
    await core.create_namespaced_pod(ns, _pod())

    async def running() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("probed", ns)
        return pod if pod.status.phase == "Running" and pod.status.pod_ip else None

    pod = await waiting.until(running, timeout=60, what="the pod Running")
    ip = pod.status.pod_ip
    conditions = {c.type: c for c in pod.status.conditions}
    assert (conditions["Ready"].status, conditions["Ready"].reason) == (
        "False",
        "ContainersNotReady",
    )
    assert conditions["ContainersReady"].status == "False"
    assert pod.status.container_statuses[0].ready is False
    assert pod.status.container_statuses[0].started is True

    async def out_of_service() -> bool:
        return await _endpoint_ready(api, ns, ip) is False

    await waiting.until(out_of_service, timeout=30, what="the pod in its slice, not ready")

    async def ready() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("probed", ns)
        found = {c.type: c for c in pod.status.conditions}
        return pod if found["Ready"].status == "True" else None

    pod = await waiting.until(ready, timeout=30, what="Ready once /ready answers")
    now = {c.type: c for c in pod.status.conditions}
    assert now["ContainersReady"].status == "True"
    assert now["Ready"].last_transition_time >= conditions["Ready"].last_transition_time
    assert (
        now["PodScheduled"].last_transition_time == conditions["PodScheduled"].last_transition_time
    )

    async def in_service() -> bool:
        return await _endpoint_ready(api, ns, ip) is True

    await waiting.until(in_service, timeout=30, what="the pod ready in its slice")

    async def restarted() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("probed", ns)
        return pod if pod.status.container_statuses[0].restart_count >= 1 else None

    pod = await waiting.until(restarted, timeout=60, what="the liveness restart")
    last = pod.status.container_statuses[0].last_state.terminated
    assert last is not None and last.exit_code == 137

    async def events() -> dict[str, list[str]] | None:
        found = await core.list_namespaced_event(ns, field_selector="involvedObject.name=probed")
        by_reason: dict[str, list[str]] = {}
        for event in found.items:
            by_reason.setdefault(event.reason, []).append(event.message)
        return by_reason if "Killing" in by_reason else None

    seen = await waiting.until(events, timeout=30, what="the Killing event")
    assert "Container app failed liveness probe, will be restarted" in seen["Killing"]
    unhealthy = seen["Unhealthy"]
    assert "Liveness probe failed: HTTP probe failed with statuscode: 500" in unhealthy
    assert "Readiness probe failed: HTTP probe failed with statuscode: 404" in unhealthy
    await core.delete_namespace(ns)
