"""Node and Lease operations for virtual nodes (one Lease per Node, in kube-node-lease)."""

from __future__ import annotations

import datetime

from vk_fargate import errors
from vk_fargate.k8s import kube

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40  # as kubelet: the node is unhealthy 40 s after its last renewal


def path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


def lease_path(name: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"


async def create(api: kube.Kube, node: kube.JSON) -> kube.JSON:
    """Register a node, or return the existing one of that name."""
    try:
        return await api.create("/api/v1/nodes", node)
    except errors.KubeError as exc:
        if not exc.conflict:
            raise
        return await api.get(path(node["metadata"]["name"]))


async def patch_status(api: kube.Kube, name: str, status: kube.JSON) -> kube.JSON:
    return await api.patch(path(name) + "/status", {"status": status})


async def delete(api: kube.Kube, name: str) -> None:
    """Delete the node (its lease goes with it, by owner reference); gone is fine."""
    try:
        await api.delete(path(name))
    except errors.KubeError as exc:
        if not exc.not_found:
            raise


def micro_now() -> str:
    """A Lease's MicroTime: RFC 3339 with exactly six fractional digits."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(node: kube.JSON, now: str, holder: str) -> kube.JSON:
    meta = node["metadata"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": meta["name"],
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
    }


async def renew_lease(api: kube.Kube, node: kube.JSON, holder: str) -> None:
    """Renew the node's lease, creating it when missing."""
    name = node["metadata"]["name"]
    now = micro_now()
    try:
        await api.patch(
            lease_path(name),
            {"spec": {"renewTime": now, "holderIdentity": holder}},
            kind=kube.MERGE_PATCH,
        )
    except errors.KubeError as exc:
        if not exc.not_found:
            raise
        try:
            await api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                lease(node, now, holder),
            )
        except errors.KubeError as again:
            if not again.conflict:
                raise
