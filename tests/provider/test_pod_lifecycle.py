"""A single pod's life on Fargate: environment, config errors, deletion, completion."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client as fleet_api

pytestmark = pytest.mark.e2e


async def _ns(api: k8s.ApiClient) -> str:
    return await conftest.namespace(api, "pods")


def _pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": "busybox", "command": ["sh", "-c", script]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"team": "blue", **conftest.for_scheduler()},
            "annotations": {"note": "hi"},
        },
        "spec": {
            "schedulerName": "fargate-scheduler",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            **spec,
        },
    }


async def _logs(core: k8s.CoreV1Api, ns: str, name: str) -> str:
    return str(await core.read_namespaced_pod_log(name, ns))


async def _phase(core: k8s.CoreV1Api, ns: str, name: str, *phases: str) -> k8s.V1Pod:
    async def probe() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None

    return await waiting.until(probe, timeout=60, what=f"{ns}/{name} in {phases}")


async def test_environment_is_resolved_before_start(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await _ns(api)
    await core.create_namespaced_config_map(
        ns,
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name="settings"), data={"COLOR": "green", "SIZE": "xl"}
        ),
    )
    await core.create_namespaced_secret(
        ns,
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="creds"), string_data={"password": "s3cret"}),
    )
    await core.create_namespaced_service(
        ns,
        k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name="db"),
            spec=k8s.V1ServiceSpec(ports=[k8s.V1ServicePort(port=5432, name="pg")]),
        ),
    )
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "MESSAGE", "value": "$(GREETING) world"},
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "COLOR"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {
            "name": "MISSING",
            "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}},
        },
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {
            "name": "MEM",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
    ]
    script = (
        'echo "$MESSAGE|$COLOR|$PASSWORD|${MISSING:-unset}|$POD_NAME|$TEAM|$POD_IP|$NODE|'
        "$MEM|$CFG_SIZE|$DB_SERVICE_PORT|${KUBERNETES_SERVICE_HOST:+k8s}|"
        # $(VAR) in command/args is the kubelet's to expand, pod IP included.
        '$(MESSAGE)@$(POD_IP)"; sleep 300'
    )
    body = _pod(
        "env",
        script,
        container={
            "env": env,
            "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
        },
    )
    await core.create_namespaced_pod(ns, body)
    pod = await _phase(core, ns, "env", "Running")
    ip, node = pod.status.pod_ip, pod.spec.node_name

    async def printed() -> str | None:
        text = await _logs(core, ns, "env")
        return text if text else None

    line = (await waiting.until(printed, what="the env line")).strip()
    assert line == (
        f"hello world|green|s3cret|unset|env|blue|{ip}|{node}|512|xl|5432|k8s|hello world@{ip}"
    )
    await core.delete_namespace(ns)


async def test_missing_config_map_is_a_config_error_not_a_crash(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await _ns(api)
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}]
    await core.create_namespaced_pod(ns, _pod("cfg", "echo $X; sleep 300", container={"env": env}))

    async def waiting_reason() -> str | None:
        pod = await core.read_namespaced_pod("cfg", ns)
        statuses = pod.status.container_statuses or []
        if statuses and statuses[0].state.waiting:
            return str(statuses[0].state.waiting.reason)
        return None

    assert (
        await waiting.until(waiting_reason, what="a waiting reason") == "CreateContainerConfigError"
    )
    events = await core.list_namespaced_event(ns, field_selector="involvedObject.name=cfg")
    assert any('configmap "later" not found' in e.message for e in events.items)
    # Creating the ConfigMap lets the retry start the pod.
    await core.create_namespaced_config_map(
        ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="later"), data={"x": "now"})
    )
    await _phase(core, ns, "cfg", "Running")
    await core.delete_namespace(ns)


async def test_completed_and_failed_pods(api: k8s.ApiClient, provider: conftest.Provider) -> None:
    core = k8s.CoreV1Api(api)
    ns = await _ns(api)
    await core.create_namespaced_pod(ns, _pod("ok", "echo done", restartPolicy="Never"))
    await core.create_namespaced_pod(ns, _pod("bad", "exit 3", restartPolicy="Never"))
    ok = await _phase(core, ns, "ok", "Succeeded")
    assert ok.status.container_statuses[0].state.terminated.exit_code == 0
    bad = await _phase(core, ns, "bad", "Failed")
    terminated = bad.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3 and terminated.reason == "Error"
    assert await _logs(core, ns, "ok") == "done\n"
    await core.delete_namespace(ns)


async def test_pod_deleted_while_its_microvm_is_created_leaves_nothing(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await _ns(api)
    created = await core.create_namespaced_pod(ns, _pod("short", "sleep 300"))
    await core.delete_namespaced_pod("short", ns, grace_period_seconds=0)

    async def nothing_left() -> bool:
        async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
            vms = (await fleet_client.list_microvms({"namespace": ns})).items
        pods = (await core.list_namespaced_pod(ns)).items
        nodes = (await core.list_node()).items
        mine = [
            n
            for n in nodes
            if (n.metadata.annotations or {}).get("vk-fargate.io/pod-uid") == created.metadata.uid
        ]
        return not vms and not pods and not mine

    await waiting.until(nothing_left, timeout=60, what="no microVM, pod or node left")
    await core.delete_namespace(ns)
