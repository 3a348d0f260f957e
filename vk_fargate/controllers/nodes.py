"""Heartbeats for every virtual node, from one reconciler (not one timer per node).

Each node's Lease is renewed every ``lease_renew_seconds`` and its status (conditions'
heartbeat times) patched every ``node_status_seconds``, each node at its own phase of
the period, so 1,000 nodes make a steady trickle of requests rather than bursts. Nodes
already there when heartbeats start (this replica just took over from a dead leader, or
restarted) have Leases as old as the gap, so they are renewed within the first
``TAKEOVER_SPREAD`` seconds instead (a failover measured 25-28 s from the kill to the
last renewal before, against the node-lifecycle controller's 40 s grace). The
node-lifecycle controller thus never sees a healthy virtual node go stale. A node
whose microVM failed is reported NotReady with the fleet's reason, and so is one that
``not_ready`` (e.g. the aws-auth check) has a problem with. What a node's Ready
condition says is read from the node itself (the informer's cache, with our own writes),
so a Ready someone else changed (the node-lifecycle controller's ``Unknown``) is written
right again at once, not at the next period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from vk_fargate import errors, settings, supervision, world
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.k8s import kube
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.scheduler import scheduling

log = logging.getLogger(__name__)
TICK = 0.5  # seconds between looks at what is due
CONCURRENCY = 16  # heartbeat requests in flight at once
TAKEOVER_SPREAD = 2.0  # seconds over which the nodes found at start are first renewed


@dataclasses.dataclass
class Heartbeats:
    api: kube.Kube
    world: world.World
    cfg: settings.ProviderSettings
    lease_due: dict[str, float] = dataclasses.field(default_factory=dict)
    status_due: dict[str, float] = dataclasses.field(default_factory=dict)
    max_lag: float = 0.0  # worst lateness of a lease renewal, seconds (a metric)
    not_ready: Callable[[kube.JSON], str | None] | None = None  # why a node is not Ready
    _outage: supervision.Outage = dataclasses.field(
        default_factory=lambda: supervision.Outage(log, "node heartbeats")
    )

    async def run(self) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)
        spread = min(TAKEOVER_SPREAD, self.cfg.lease_renew_seconds)  # for the nodes found now
        while True:
            now = time.monotonic()
            names = list(self.world.nodes)
            for gone in set(self.lease_due) - set(names):
                self.lease_due.pop(gone, None)
                self.status_due.pop(gone, None)
            work = []
            for name in names:
                if name not in self.lease_due:  # a new node: its own phase of the period
                    self.lease_due[name] = now + random.uniform(0, spread)
                    self.status_due[name] = now + random.uniform(0, self.cfg.node_status_seconds)
                if self.lease_due[name] <= now:
                    self.max_lag = max(self.max_lag, now - self.lease_due[name])
                    self.lease_due[name] = now + self.cfg.lease_renew_seconds
                    work.append(self._guarded(gate, self._renew(name)))
                message = self._message(name)
                if message != self._says(name):  # the node's own Ready (whoever wrote it)
                    self.status_due[name] = now  # Ready changes: say so now, not next period
                if self.status_due[name] <= now:
                    self.status_due[name] = now + self.cfg.node_status_seconds
                    work.append(self._guarded(gate, self._status(name, message)))
            spread = self.cfg.lease_renew_seconds  # nodes seen from now on are new ones
            if work:
                await asyncio.gather(*work)
            await asyncio.sleep(TICK)

    async def _guarded(self, gate: asyncio.Semaphore, call: Coroutine[Any, Any, None]) -> None:
        async with gate:
            try:
                await call
            except errors.KubeUnavailable as exc:
                self._outage.failed(exc)
            except (errors.KubeError, OSError, TimeoutError) as exc:
                log.warning("node heartbeat failed: %s", exc)
            else:
                self._outage.ended()

    async def _renew(self, name: str) -> None:
        node = self.world.nodes.get(name)
        if node is not None:
            await k8s_nodes.renew_lease(self.api, node, holder=name)

    async def _status(self, name: str, message: str) -> None:
        """Patch the node's conditions: Ready unless ``message`` says why not."""
        if name not in self.world.nodes:
            return  # deleted since the tick began
        conditions = fargate_nodes.conditions(scheduling.now(), ready=not message, message=message)
        # declaredFeatures too, so a node registered by an older provider gains them.
        status = {"conditions": conditions, "declaredFeatures": fargate_nodes.DECLARED_FEATURES}
        written = await k8s_nodes.patch_status(self.api, name, status)
        self.world.node_cache.wrote(written)  # read your writes: not due again next tick

    def _says(self, name: str) -> str | None:
        """What node ``name``'s Ready condition says, as ``_message`` would: empty when
        Ready; None when the node is gone."""
        node = self.world.nodes.get(name)
        if node is None:
            return None
        conditions = (node.get("status") or {}).get("conditions") or []
        ready: kube.JSON = next((c for c in conditions if c.get("type") == "Ready"), {})
        return "" if ready.get("status") == "True" else str(ready.get("message") or "NotReady")

    def _message(self, name: str) -> str:
        """Why node ``name`` is not Ready; empty when it is."""
        node = self.world.nodes.get(name)
        if node is None:
            return ""
        uid = (node["metadata"].get("annotations") or {}).get(fargate_nodes.POD_UID_ANNOTATION)
        vm = self.world.vms.get(uid or "")
        if vm is not None and vm.status.state == "failed":
            return f"microVM failed: {vm.status.reason}"
        return (self.not_ready(node) if self.not_ready is not None else None) or ""
