"""What the provider knows, fed by the watches: pods (by UID), microVMs (by pod UID,
which is their id) and our virtual nodes (by name, and by the UID of their pod).
Reconcilers read it; the watch handlers keep it current.
"""

from __future__ import annotations

import asyncio
from typing import Any

from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import models

JSON = dict[str, Any]


class World:
    def __init__(self) -> None:
        self.pods: dict[str, JSON] = {}
        self.pods_by_name: dict[tuple[str, str], str] = {}
        self.vms: dict[str, models.MicroVM] = {}
        self.nodes: dict[str, JSON] = {}
        self.node_by_pod: dict[str, str] = {}
        # Pods whose node name is still held by another pod's node, by that name.
        self.name_waiters: dict[str, set[str]] = {}
        self.fleet_synced = asyncio.Event()

    def pod_by_name(self, namespace: str, name: str) -> JSON | None:
        uid = self.pods_by_name.get((namespace, name))
        return self.pods.get(uid) if uid else None

    def set_pod(self, pod: JSON, *, deleted: bool = False) -> str:
        meta = pod["metadata"]
        uid: str = meta["uid"]
        if deleted:
            self.pods.pop(uid, None)
            if self.pods_by_name.get((meta["namespace"], meta["name"])) == uid:
                del self.pods_by_name[(meta["namespace"], meta["name"])]
        else:
            self.pods[uid] = pod
            self.pods_by_name[(meta["namespace"], meta["name"])] = uid
        return uid

    def set_node(self, node: JSON, *, deleted: bool = False) -> str | None:
        """Record a node change; the UID of the pod it serves, if any.

        Names are reused (they come from addresses), so a deletion removes only the
        very node it names (same UID), never a successor already recorded.
        """
        meta = node["metadata"]
        uid = pod_of(node)
        if deleted:
            known = self.nodes.get(meta["name"])
            if known is not None and known["metadata"].get("uid") == meta.get("uid"):
                del self.nodes[meta["name"]]
            if uid and self.node_by_pod.get(uid) == meta["name"]:
                del self.node_by_pod[uid]
        else:
            self.nodes[meta["name"]] = node
            if uid:
                self.node_by_pod[uid] = meta["name"]
        return uid

    def node_of(self, uid: str) -> JSON | None:
        """The node made for pod ``uid``, if the world has it."""
        name = self.node_by_pod.get(uid)
        node = self.nodes.get(name) if name else None
        return node if node is not None and pod_of(node) == uid else None


def pod_of(node: JSON) -> str | None:
    """The UID of the pod a virtual node was made for (its annotation)."""
    uid = (node["metadata"].get("annotations") or {}).get(fargate_nodes.POD_UID_ANNOTATION)
    return str(uid) if uid else None
