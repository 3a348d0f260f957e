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

from vk_fargate import errors
from vk_fargate.k8s import kube
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.kubelet import server
from vk_fargate.scheduler import world

log = logging.getLogger(__name__)


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
        self._unservable: set[str] = set()  # nodes already reported as not servable here

    def changed(self) -> None:
        """Something about our nodes changed (a watch event, leadership): look again."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.reconcile()

    async def reconcile(self) -> None:
        nodes = dict(self.world.nodes)
        serving = self.kubelet.serving()
        for gone in set(serving) - set(nodes):
            await self.kubelet.stop_node(gone)
            self._unservable.discard(gone)
        for name, node in nodes.items():
            try:
                await self._serve(name, node, serving.get(name))
            except errors.KubeError as exc:
                log.warning("cannot move node %s to a port of its own here: %s", name, exc)
                self._changed.set()  # try again at the next change

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
            await k8s_nodes.patch_status(
                self.api,
                name,
                {
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": served}},
                    "addresses": [{"type": "Hostname", "address": self.address}],
                },
            )
            log.info("node %s: kubelet API now at %s:%d", name, self.address, served)
            self._unservable.discard(name)
