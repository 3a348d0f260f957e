"""The event recorder against the real API server: events are written in the
background, each object's in order, a repeat bumps its twin's count, and ``close``
writes what is still queued."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client as k8s

from tests.provider import conftest
from vk_fargate.devcluster import cluster
from vk_fargate.k8s import client, events, kube

pytestmark = pytest.mark.e2e


async def test_events_are_written_in_the_background_in_order_and_aggregated(
    api: k8s.ApiClient, local_cluster: cluster.Cluster
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "events")
    door = kube.Kube(await client.connect(local_cluster.kubeconfig))
    recorder = events.Recorder(door, component="kubelet", instance="test")
    try:
        targets = []
        for n in range(6):
            made = await core.create_namespaced_config_map(
                ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=f"target-{n}"))
            )
            targets.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"target-{n}", "namespace": ns, "uid": made.metadata.uid},
                }
            )
        for target in targets:
            for reason in ("Pulling", "Pulled", "Created", "Started"):
                await recorder.record(target, reason, f"{reason} it")
            await recorder.record(target, "Started", "Started it")  # a repeat: count 2
        await recorder.close()

        written = (await core.list_namespaced_event(ns)).items
        assert len(written) == 6 * 4, [(e.involved_object.name, e.reason) for e in written]
        for target in targets:
            mine = [e for e in written if e.involved_object.uid == target["metadata"]["uid"]]
            counts = {e.reason: e.count for e in mine}
            assert counts == {"Pulling": 1, "Pulled": 1, "Created": 1, "Started": 2}
            assert {e.source.component for e in mine} == {"kubelet"}
            assert {e.involved_object.kind for e in mine} == {"ConfigMap"}
    finally:
        await door.close()
        await core.delete_namespace(ns)
