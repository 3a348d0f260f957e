"""Pods created while the provider (and so its webhook) is down are not lost: once it is
back, a Deployment's pods are made again by their ReplicaSet and a bare pod is
recreated, all for fargate-scheduler, each with an event saying why. Pods no profile
selects are left alone. On a control plane of its own: the test kills the webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.fargate import unrouted
from vk_fargate.fleet import client as fleet_api
from vk_fargate.k8s import client

pytestmark = pytest.mark.e2e
CLUSTER = "outage"


def _bare(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod as a user writes it: no schedulerName (the webhook decides)."""
    manifest = conftest.shell_pod(name, "exec sleep 3600")
    manifest["metadata"]["labels"] = labels
    del manifest["spec"]["schedulerName"]
    return manifest


def _deployment(labels: dict[str, str]) -> dict[str, Any]:
    template = _bare("unused", labels)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        },
    }


async def test_pods_created_while_the_webhook_is_down_go_to_fargate_once_it_is_back(
    own_cluster: cluster.Cluster, fleet: devfleet.Fleet, tmp_path: Path
) -> None:
    env = devprovider.environment(
        own_cluster, fleet, port=processes.free_ports(1)[0], cluster_name=CLUSTER
    )
    env["VK_FARGATE_PROFILES_FILE"] = str(conftest.profiles_file(tmp_path))
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    await provider.start()
    api = await client.connect(own_cluster.kubeconfig)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    fargate = {"app": "web", **conftest.for_scheduler()}
    try:
        ns = await conftest.namespace(api, "outage")
        provider.kill()  # the webhook does not answer: failurePolicy Ignore lets pods in
        await core.create_namespaced_pod(ns, _bare("bare", fargate))
        await core.create_namespaced_pod(ns, _bare("elsewhere", {"app": "other"}))
        await apps.create_namespaced_deployment(ns, _deployment(fargate))

        async def created_unrouted() -> dict[str, Any] | None:
            found = (await core.list_namespaced_pod(ns)).items
            if len(found) < 4:
                return None
            assert {p.spec.scheduler_name for p in found} == {"default-scheduler"}
            return {p.metadata.name: p for p in found}

        before = await waiting.until(created_unrouted, what="four pods made without the webhook")
        await provider.start()

        async def all_on_fargate() -> list[Any] | None:
            found = [
                p
                for p in (await core.list_namespaced_pod(ns)).items
                if p.metadata.name != "elsewhere"
            ]
            running = [p for p in found if p.status.phase == "Running"]
            return found if len(found) == 3 and len(running) == 3 else None

        placed = await waiting.until(all_on_fargate, timeout=120, what="three pods Running")
        for pod in placed:
            assert pod.spec.scheduler_name == "fargate-scheduler", pod.metadata.name
            assert pod.spec.node_name.startswith("fargate-ip-"), pod.metadata.name
            assert pod.metadata.labels["eks.amazonaws.com/fargate-profile"] == "e2e"
        bare = next(p for p in placed if p.metadata.name == "bare")
        old_uid = before["bare"].metadata.uid
        assert bare.metadata.uid != old_uid
        assert bare.metadata.annotations[unrouted.REPLACES_ANNOTATION] == old_uid
        assert bare.spec.containers[0].command == ["sh", "-c", "exec sleep 3600"]
        replicas = [p for p in placed if p.metadata.name != "bare"]
        assert not {p.metadata.uid for p in replicas} & {p.metadata.uid for p in before.values()}

        elsewhere = await core.read_namespaced_pod("elsewhere", ns)
        assert elsewhere.metadata.uid == before["elsewhere"].metadata.uid, "not ours: untouched"
        assert elsewhere.spec.scheduler_name == "default-scheduler"

        said = (await core.list_namespaced_event(ns)).items
        recreated = [e for e in said if e.reason == "RecreatedForFargate"]
        on = {(e.involved_object.kind, e.involved_object.uid) for e in recreated}
        assert ("Pod", bare.metadata.uid) in on, [e.message for e in recreated]
        assert ("Pod", old_uid) in on
        assert any(kind == "ReplicaSet" for kind, _ in on)
        for event in recreated:
            assert event.type == "Warning" and event.source.component == "fargate-scheduler"
        on_set = next(e for e in recreated if e.involved_object.kind == "ReplicaSet")
        assert "while the Fargate admission webhook did not answer" in on_set.message
        assert "Fargate profile e2e selects it" in on_set.message

        await core.delete_namespace(ns)

        async def microvms_gone() -> bool:
            async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
                left = await fleet_client.list_microvms({"namespace": ns})
            return not left.items

        await waiting.until(microvms_gone, timeout=90, what="the namespace's microVMs deleted")
    finally:
        provider.stop()
        await api.close()
