"""Each virtual node's own kubelet port: served by every replica, owned by the leader.

A node advertises ``status.daemonEndpoints.kubeletEndpoint.Port`` and its ``Hostname``
address; the API server and metrics-server reach the node there. The scheduler picks a
free port when it registers a node (``KubeletServer.serve_node``); this reconciler keeps
every replica serving each node's port as the node watch reports them, stops serving
deleted nodes, and, on the leader, moves a node to a new port or to this replica's
address when its recorded one cannot be served here (a restart found the port taken,
a failover moved the leader, a node registered before nodes had ports of their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vk_fargate import errors, world
from vk_fargate.k8s import kube
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.kubelet import server

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0  # before moving a node again after the API server refused


def advertised(node: kube.JSON) -> tuple[int, str]:
    """The node's kubelet port and Hostname address (0 and "" when it has none)."""
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port", 0)
    host = next(
        (a["address"] for a in status.get("addresses") or [] if a.get("type") == "Hostname"), ""
    )
    return int(port or 0), str(host)


class NodeEndpoints:
    def __init__(
        self,
        api: kube.Kube,
        kubelet: server.KubeletServer,
        state: world.World,
        *,
        address: str,
        leading: Callable[[], bool],
    ) -> None:
        self.api = api
        self.kubelet = kubelet
        self.world = state
        self.address = address  # this replica's advertised address
        self.leading = leading
        self._changed = asyncio.Event()
        self._pending: set[str] | None = set()  # nodes to look at; None: all of them
        self._unservable: set[str] = set()  # nodes already reported as not servable here

    def changed(self, node: str | None = None) -> None:
        """Node ``node`` changed (a watch event), or, without one, anything did
        (leadership): look again at that node, or at all."""
        if node is None:
            self._pending = None
        elif self._pending is not None:
            self._pending.add(node)
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            names, self._pending = self._pending, set()
            await self.reconcile(names)

    async def reconcile(self, names: set[str] | None = None) -> None:
        """Serve (or stop serving) ``names``, or every node we serve or know of."""
        serving = self.kubelet.serving()
        if names is None:
            names = set(serving) | set(self.world.nodes)
        for name in names:
            node = self.world.nodes.get(name)
            if node is None:
                await self.kubelet.stop_node(name)
                self._unservable.discard(name)
                continue
            try:
                await self._serve(name, node, serving.get(name))
            except errors.KubeError as exc:
                log.warning("cannot move node %s to a port of its own here: %s", name, exc)
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self.changed, name)

    async def _serve(self, name: str, node: kube.JSON, served: int | None) -> None:
        """Serve the node's recorded port; the leader moves it when that cannot be done."""
        port, host = advertised(node)
        if port and port != self.kubelet.port and served != port:
            try:
                served = await self.kubelet.serve_node(name, port)
            except errors.ConfigError as exc:
                served = None
                if name not in self._unservable:
                    log.info("node %s: %s", name, exc)
                    self._unservable.add(name)
        if not self.leading():
            return
        if served is None:
            served = await self.kubelet.serve_node(name, 0)
        if (served, host) != (port, self.address):
            written = await k8s_nodes.patch_status(
                self.api,
                name,
                {
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": served}},
                    "addresses": [{"type": "Hostname", "address": self.address}],
                },
            )
            self.world.node_cache.wrote(written)  # read your writes
            log.info("node %s: kubelet API now at %s:%d", name, self.address, served)
            self._unservable.discard(name)
