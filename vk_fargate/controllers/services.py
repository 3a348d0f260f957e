"""The fleet's Service table of this cluster, kept equal to the cluster's Services, as
kube-proxy keeps a node's rules: every change to a Service, an EndpointSlice or a
ServiceCIDR marks the table dirty; changes that come together are put together, in
one ``PUT`` (after ``settle`` seconds), and only when the table differs from the one
last put. It is put again every ``resync`` seconds all the same, as kube-proxy's
periodic sync, so a fleet that lost it or refused it gets it back.

Pods are placed only after the first table is in force (``first``), so that no pod
starts before its Service range is routed nowhere but to Services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from vk_fargate import errors, supervision
from vk_fargate.fargate import services
from vk_fargate.fleet import backend, models
from vk_fargate.k8s import informers, kube

log = logging.getLogger(__name__)

SERVICE = "service"  # the EndpointSlices' index: their Service's namespace/name


class ServiceTables:
    def __init__(
        self,
        fleet: backend.MicroVMs,
        *,
        cluster: str,
        services_informer: informers.Informer,
        slices: informers.Informer,
        cidrs: Callable[[], list[str]],
        settle: float = 0.02,
        resync: float = 60.0,
    ) -> None:
        self.fleet = fleet
        self.cluster = cluster
        self.services = services_informer
        self.slices = slices
        self.cidrs = cidrs
        self.settle = settle
        self.resync = resync
        self.first = asyncio.Event()  # a table is in force
        self.last: models.ServiceTable | None = None
        self.puts = 0
        self.put_seconds = 0.0  # the latest put, from the change that made it due
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None
        slices.add_indexer(SERVICE, services.slice_owner)

    def changed(self, _kind: str, _obj: kube.JSON) -> None:
        """An informer's handler: a Service, EndpointSlice or ServiceCIDR changed."""
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._dirty.set()

    def wanted(self) -> models.ServiceTable:
        return services.table(
            self.services.cache.values(),
            lambda owner: self.slices.by_index(SERVICE, owner),
            self.cidrs(),
        )

    async def run(self) -> None:
        """Put the table whenever it changes, and every ``resync`` seconds; returns
        only when cancelled."""
        backoff = supervision.Backoff(0.5, 30.0)
        due = True  # the first table, at once
        while True:
            if not due:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.resync):
                        await self._dirty.wait()
                await asyncio.sleep(self.settle)  # let a burst of changes come together
            self._dirty.clear()
            since, self._dirty_since = self._dirty_since, None
            try:
                await self._put(since)
            except (errors.FleetUnavailable, OSError) as exc:
                log.warning("service table of %s not put: %s; retrying", self.cluster, exc)
                self._dirty_since = since
                await backoff.sleep()
                due = True
                continue
            backoff.reset()
            due = False

    async def _put(self, since: float | None) -> None:
        try:
            table = self.wanted()
        except ValueError as exc:  # e.g. a table over the fleet's bounds
            log.error("service table of %s cannot be made: %s", self.cluster, exc)
            return
        if table == self.last and since is not None:
            self.first.set()
            return  # a change that changed nothing the pods see
        try:
            await self.fleet.put_services(self.cluster, table)
        except errors.FleetError as exc:
            # Not a passing trouble (FleetUnavailable is): a range the fleet cannot
            # route, or a fleet without Services (404). Said loudly, tried again at the
            # next change or resync; pods are placed regardless.
            if isinstance(exc, errors.FleetUnavailable):
                raise
            log.error("the fleet refused the service table of %s: %s", self.cluster, exc)
            self.first.set()
            return
        self.last = table
        self.puts += 1
        if since is not None:
            self.put_seconds = time.monotonic() - since
        self.first.set()
