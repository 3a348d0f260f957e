"""Node and Lease operations for virtual nodes (one Lease per Node, in kube-node-lease).

A node's name comes from its microVM's address, and addresses are reused, so a name
alone never identifies a node: every deletion here is bound to one object by a UID
precondition, and a Lease counts as a node's only when its owner reference names that
node's UID. A late cleanup of an old pod can then never remove its successor's node.
"""

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


def _precondition(uid: str) -> kube.JSON:
    return {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}


async def _delete_exactly(api: kube.Kube, path_: str, uid: str) -> None:
    """Delete the object at ``path_`` if it is still the one with ``uid``."""
    try:
        await api.delete(path_, _precondition(uid))
    except errors.KubeError as exc:
        if not (exc.not_found or exc.conflict):
            raise


async def delete(api: kube.Kube, node: kube.JSON) -> None:
    """Delete exactly ``node`` (UID precondition) and its Lease; gone, or already
    replaced by a same-named successor, is fine: the successor is left alone."""
    meta = node["metadata"]
    await _delete_exactly(api, path(meta["name"]), meta["uid"])
    await delete_lease(api, meta["name"], node_uid=meta["uid"])


async def delete_lease(api: kube.Kube, name: str, *, node_uid: str) -> None:
    """Delete the Lease ``name`` if it belongs to the node with ``node_uid``."""
    try:
        found = await api.get(lease_path(name))
    except errors.KubeError as exc:
        if exc.not_found:
            return
        raise
    if _owner_uid(found) == node_uid:
        await _delete_exactly(api, lease_path(name), found["metadata"]["uid"])


def _owner_uid(lease_doc: kube.JSON) -> str | None:
    owners = lease_doc["metadata"].get("ownerReferences") or []
    return next((str(o.get("uid")) for o in owners if o.get("kind") == "Node"), None)


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
    """Renew the node's lease, creating it when missing. A same-named Lease left by an
    earlier node (its owner another UID) is replaced, never renewed for this node."""
    name = node["metadata"]["name"]
    now = micro_now()
    try:
        renewed = await api.patch(
            lease_path(name),
            {"spec": {"renewTime": now, "holderIdentity": holder}},
            kind=kube.MERGE_PATCH,
        )
    except errors.KubeError as exc:
        if not exc.not_found:
            raise
    else:
        if _owner_uid(renewed) == node["metadata"]["uid"]:
            return
        await _delete_exactly(api, lease_path(name), renewed["metadata"]["uid"])
    await _create_lease(api, node, now, holder)


async def create_lease(api: kube.Kube, node: kube.JSON, holder: str) -> None:
    """The Lease of a node just registered: one request, as its name is usually free
    (a renewal would first try a patch); one left by an earlier same-named node is
    replaced by ``renew_lease``."""
    if not await _create_lease(api, node, micro_now(), holder):
        await renew_lease(api, node, holder)


async def _create_lease(api: kube.Kube, node: kube.JSON, now: str, holder: str) -> bool:
    """Create the node's Lease; False when one of that name exists already."""
    try:
        await api.create(
            f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
            lease(node, now, holder),
        )
    except errors.KubeError as exc:
        if not exc.conflict:
            raise
        return False
    return True
