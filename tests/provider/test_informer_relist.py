"""An informer's relist against the real API server: a pod deleted and created again
under the same name while the watch was down is reported as what it is, the old pod
DELETED and the new one ADDED (not one pod MODIFIED), so the old pod's microVM and
node are cleaned up, and the indexes know the new UID only."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster
from vk_fargate.k8s import client, informers, kube

pytestmark = pytest.mark.e2e


async def test_a_pod_replaced_while_unwatched_is_deleted_then_added(
    api: k8s.ApiClient, local_cluster: cluster.Cluster
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "relist")
    door = kube.Kube(await client.connect(local_cluster.kubeconfig))
    informer = informers.Informer(door, f"/api/v1/namespaces/{ns}/pods", name="relist-test")
    informer.add_indexer("uid", lambda pod: [pod["metadata"]["uid"]])
    seen: list[tuple[str, str]] = []
    informer.subscribe(lambda kind, pod: seen.append((kind, pod["metadata"]["uid"])))
    manifest = conftest.shell_pod("same", "sleep 300", "nobodys-scheduler")
    try:
        old = (await core.create_namespaced_pod(ns, manifest)).metadata.uid
        task = asyncio.create_task(informer.run(), name="relist-test-1")
        await waiting.until(lambda: _has(informer, old), what="the first pod in the cache")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        await core.delete_namespaced_pod("same", ns, grace_period_seconds=0)
        new = (await core.create_namespaced_pod(ns, manifest)).metadata.uid
        seen.clear()
        task = asyncio.create_task(informer.run(), name="relist-test-2")
        await waiting.until(lambda: _has(informer, new), what="the new pod in the cache")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert seen[:2] == [("DELETED", old), ("ADDED", new)], seen
        assert informer.by_index("uid", old) == []
    finally:
        await door.close()
        await core.delete_namespace(ns)


async def _has(informer: informers.Informer, uid: str) -> bool:
    return bool(informer.by_index("uid", uid))
