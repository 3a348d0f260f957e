"""What the provider knows, as one source of truth: indexes over the informers' caches
of pods (by UID, and by namespace/name: the cache's own key) and of our virtual nodes
(by name, and by the UID of the pod each was made for, its annotation), and the
microVMs (by pod UID, which is their id) as the fleet's event stream reports them.

Nothing here is a copy: the informers keep the caches current, the provider's own
writes go into them at once (``wrote``, read your writes), and every controller and
the kubelet API read the same objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import models
from vk_fargate.k8s import informers

JSON = dict[str, Any]
BY_UID = "uid"
BY_NAME = "name"
BY_POD = "pod-uid"


def pod_of(node: JSON) -> str | None:
    """The UID of the pod a virtual node was made for (its annotation)."""
    uid = (node["metadata"].get("annotations") or {}).get(fargate_nodes.POD_UID_ANNOTATION)
    return str(uid) if uid else None


class Unique(Mapping[str, JSON]):
    """A live, read-only view of one index whose values name one object each."""

    def __init__(self, cache: informers.Indexer, index: str) -> None:
        self._cache = cache
        self._index = index

    def __getitem__(self, value: str) -> JSON:
        found = self._cache.by_index(self._index, value)
        if not found:
            raise KeyError(value)
        return found[0]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cache.indices[self._index]))

    def __len__(self) -> int:
        return len(self._cache.indices[self._index])

    def __contains__(self, value: object) -> bool:
        return value in self._cache.indices[self._index]


class World:
    def __init__(
        self, pods: informers.Indexer | None = None, nodes: informers.Indexer | None = None
    ) -> None:
        self.pod_cache = pods if pods is not None else informers.Indexer()
        self.node_cache = nodes if nodes is not None else informers.Indexer()
        self.pod_cache.add_indexer(BY_UID, lambda pod: [pod["metadata"]["uid"]])
        self.node_cache.add_indexer(BY_NAME, lambda node: [node["metadata"]["name"]])
        self.node_cache.add_indexer(BY_POD, lambda node: [uid] if (uid := pod_of(node)) else [])
        self.pods: Mapping[str, JSON] = Unique(self.pod_cache, BY_UID)
        self.nodes: Mapping[str, JSON] = Unique(self.node_cache, BY_NAME)
        self.nodes_by_pod: Mapping[str, JSON] = Unique(self.node_cache, BY_POD)
        self.vms: dict[str, models.MicroVM] = {}
        # Pods whose node name is still held by another pod's node, by that name.
        self.name_waiters: dict[str, set[str]] = {}
        self.fleet_synced = asyncio.Event()

    def pod_by_name(self, namespace: str, name: str) -> JSON | None:
        return self.pod_cache.get(f"{namespace}/{name}")

    def wrote_vm(self, vm: models.MicroVM) -> None:
        """Read your writes: the fleet's answer to a request of ours replaces the cached
        microVM unless the event stream brought a later state already."""
        known = self.vms.get(vm.id)
        if known is not None and known.status.updated_at <= vm.status.updated_at:
            self.vms[vm.id] = vm
