"""kube-proxy's job for a fleet's pods: each cluster's Service table, kept, routed on
the host and programmed into the network namespace of each of its microVMs.

A pod on a ``process`` host has no node of its own with a kube-proxy, so the daemon
does it. ``PUT /v1/clusters/{cluster}/services`` hands over a cluster's whole table;
it is stored before anything else (a restart finds it), each Service range gets an
``unreachable`` route on the host (nothing for it leaves through the default route),
then each namespace of the cluster's microVMs gets its rules (``servicerules``), 8 at
a time, one failure logged and never fatal. The PUT answers once they are all written,
or after ``PUT_WAIT`` seconds while the rest goes on (many pods, a big table); tables
put meanwhile are written together by the next pass. A namespace whose text has not
changed since it was last written is skipped (a digest per namespace, stored, so a
restart rewrites only what changed), so the same table again costs nothing. A new
microVM gets its rules as its namespace is made, before its containers start
(``provision``). The service routes' relays (``relay``) are part of the same rules.
Without root (``nominal`` networking) tables are kept and answered, nothing is
programmed; ``microvm`` guests get no rules.

The host routes this daemon made are recorded (key ``ROUTES``), so a restart removes
those no table lists any more and a Service range never shadows a route it did not
make: such a range, or one overlapping a subnet of the fleet, is refused (Conflict).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path

from vk_fargate import errors
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import models
from vk_fargate.fleetd import network, relay, servicerules, store

log = logging.getLogger(__name__)

TABLES = "services/"  # key prefix of the stored tables, by cluster
RULES = "service-rules/"  # key prefix of the digests of the namespaces' rules, by key
ROUTES = "service-routes"  # the host's unreachable routes this daemon made
PARALLEL = 8  # namespaces programmed at once
PUT_WAIT = 10.0  # seconds a PUT waits for its namespaces (a client gives up at 30)
EMPTY_TABLE = models.ServiceTable()


@dataclasses.dataclass(frozen=True)
class Target:
    """A microVM's namespace to program: its sandbox key, the microVM, its gateway."""

    key: str
    vm: models.MicroVM
    gateway: str


def cluster_of(vm: models.MicroVM) -> str | None:
    return vm.spec.labels.get(fargate_nodes.CLUSTER_LABEL)


class Services:
    """The tables by cluster, the rules in force by namespace, the host's routes."""

    def __init__(
        self,
        db: store.Store,
        *,
        networking: network.Mode,
        subnets: dict[str, ipaddress.IPv4Network],
    ) -> None:
        self._db = db
        self._networking = networking
        self._subnets = subnets
        self.relays = relay.Relays()
        self._tables = {
            cluster: models.ServiceTable.model_validate(doc)
            for cluster, doc in db.docs(TABLES).items()
        }
        # sandbox key -> digest of its rules in force, stored too: a restart rewrites
        # no namespace whose rules it already has
        self._applied = {key: str(doc["digest"]) for key, doc in db.docs(RULES).items()}
        self._locks: dict[str, asyncio.Lock] = {}  # one writer per namespace
        self._texts: dict[
            tuple[str | None, tuple[servicerules.Relay, ...]],
            tuple[models.ServiceTable, str, str],
        ] = {}  # the rules rendered last, by cluster and relays
        self._gate = asyncio.Semaphore(PARALLEL)
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}  # puts, by cluster
        self._runners: dict[str, asyncio.Task[None]] = {}  # their passes, by cluster
        self._routes_lock = asyncio.Lock()

    def get(self, cluster: str) -> models.ServiceTable:
        return self._tables.get(cluster) or EMPTY_TABLE

    async def put(
        self, cluster: str, table: models.ServiceTable, targets: Callable[[], list[Target]]
    ) -> models.ServiceTable:
        """Keep ``table`` as ``cluster``'s, route its ranges nowhere on the host, and
        program ``targets()`` (the cluster's microVMs) with it, waiting for that at most
        ``PUT_WAIT`` seconds; Conflict for a range that overlaps a subnet of the fleet
        or a route the daemon did not make."""
        async with self._routes_lock:
            await self._check(table)
            self._tables[cluster] = table
            self._texts = {k: v for k, v in self._texts.items() if k[0] != cluster}
            self._db.put_doc(TABLES + cluster, table.model_dump(mode="json"))
            await self._sync_routes()
        with contextlib.suppress(TimeoutError):  # the rest goes on in the background
            await asyncio.wait_for(asyncio.shield(self._pass(cluster, targets)), PUT_WAIT)
        return table

    def _pass(self, cluster: str, targets: Callable[[], list[Target]]) -> asyncio.Future[None]:
        """A pass over ``cluster``'s namespaces that starts after this call, done when
        the future is. Passes of a cluster run one at a time, and the puts that came
        during one share the next: a burst of tables costs two passes, not one each."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(cluster, []).append(done)
        runner = self._runners.get(cluster)
        if runner is None or runner.done():
            self._runners[cluster] = asyncio.create_task(
                self._run_passes(cluster, targets), name=f"services-{cluster}"
            )
        return done

    async def _run_passes(self, cluster: str, targets: Callable[[], list[Target]]) -> None:
        while waiting := self._waiting.pop(cluster, []):
            try:
                await self.program_all(targets())
            finally:
                for done in waiting:
                    if not done.done():
                        done.set_result(None)

    async def restore(self, targets: list[Target]) -> None:
        """After a restart: the host routes of the stored tables, and the rules of the
        namespaces that survived (their relays listening again)."""
        async with self._routes_lock:
            await self._sync_routes(force=True)  # a reboot of the host took them all
        for key in set(self._applied) - {t.key for t in targets}:  # namespaces gone
            self.forget(key)
        await self.program_all(targets)

    async def program_all(self, targets: list[Target]) -> None:
        async def one(target: Target) -> None:
            async with self._gate:
                try:
                    await self.program(target)
                except (errors.VkFargateError, OSError) as exc:
                    log.warning("microVM %s: its service rules: %s", target.vm.id, exc)

        await asyncio.gather(*(one(t) for t in targets))

    async def program(self, target: Target, *, fresh: bool = False) -> None:
        """Write ``target``'s rules into its namespace, unless they are in force already
        (``fresh``: the namespace was just made, so it has none). A namespace that does
        not exist (yet, or any more) is skipped: its provisioning programs it."""
        if self._networking != "netns":
            return
        lock = self._locks.setdefault(target.key, asyncio.Lock())
        async with lock:
            if fresh:
                self._remember(target.key, servicerules.EMPTY)
            elif not Path(network.netns_path(target.key)).exists():
                return
            text, digest = self._text(
                cluster_of(target.vm), await self.relay_rules(target.vm, target.gateway)
            )
            if self._applied.get(target.key) == digest:
                return
            self._applied.pop(target.key, None)  # unknown until iptables-restore answers
            await network.apply_rules(target.key, text)
            if self._locks.get(target.key) is lock:  # not forgotten meanwhile
                self._remember(target.key, digest)

    def _remember(self, key: str, digest: str) -> None:
        self._applied[key] = digest
        self._db.put_doc(RULES + key, {"digest": digest})

    def _text(self, cluster: str | None, relays: list[servicerules.Relay]) -> tuple[str, str]:
        """The rules of a namespace and their digest, rendered once per table and
        relays (the namespaces of a cluster on one subnet share them)."""
        table = self._tables.get(cluster or "") or EMPTY_TABLE
        key = (cluster, tuple(relays))
        cached = self._texts.get(key)
        if cached is None or cached[0] is not table:
            text = servicerules.render(relays, table)
            cached = self._texts[key] = (table, text, servicerules.digest(text))
        return cached[1], cached[2]

    async def relay_rules(self, vm: models.MicroVM, gateway: str) -> list[servicerules.Relay]:
        """The DNAT rules for ``vm``'s service routes, their relays listening."""
        return [
            (r.cluster_ip, r.port, gateway, await self.relays.ensure(gateway, r.endpoint))
            for r in vm.spec.service_routes
        ]

    def forget(self, key: str) -> None:
        """The namespace ``key`` is gone."""
        self._applied.pop(key, None)
        self._db.delete_doc(RULES + key)
        self._locks.pop(key, None)

    async def close(self, *, remove_routes: bool) -> None:
        """Stop the relays; with ``remove_routes`` also take back the host routes (the
        tables stay: the next start routes them again)."""
        for runner in self._runners.values():
            runner.cancel()
        await asyncio.gather(*self._runners.values(), return_exceptions=True)
        await self.relays.close()
        if remove_routes and self._networking == "netns":
            async with self._routes_lock:
                await self._sync_routes(keep=False)

    # the host's routes

    def _made(self) -> set[str]:
        return set((self._db.get_doc(ROUTES) or {}).get("cidrs", []))

    async def _check(self, table: models.ServiceTable) -> None:
        made = self._made()
        for cidr in {servicerules.cidr_text(c) for c in table.service_cidrs} - made:
            net = ipaddress.IPv4Network(cidr)
            for subnet_id, subnet in self._subnets.items():
                if net.overlaps(subnet):
                    raise errors.Conflict(
                        f"service CIDR {cidr} overlaps the fleet's subnet {subnet_id} ({subnet})"
                    )
            if self._networking == "netns":
                found = await asyncio.to_thread(network.foreign_route, net, made)
                if found is not None:
                    raise errors.Conflict(f"service CIDR {cidr} overlaps the host's {found}")

    async def _sync_routes(self, *, keep: bool = True, force: bool = False) -> None:
        """An unreachable route for each range of a table (``keep``), none for any
        other this daemon made. Recorded before it is made, so a crash halfway leaves
        nothing unknown to the next run."""
        if self._networking != "netns":
            return
        made = self._made()
        every = (c for t in self._tables.values() for c in t.service_cidrs)
        wanted = {servicerules.cidr_text(c) for c in every} if keep else set()
        if wanted == made and not force:  # routed already, as recorded
            return
        for cidr in sorted(wanted - made):  # new, or taken back by a stop of the daemon
            net = ipaddress.IPv4Network(cidr)
            found = await asyncio.to_thread(network.foreign_route, net, made)
            if found is not None:
                log.error("service CIDR %s is not routed: it overlaps the host's %s", cidr, found)
                wanted.discard(cidr)
        self._db.put_doc(ROUTES, {"cidrs": sorted(made | wanted)})
        await asyncio.to_thread(_route, sorted(wanted), sorted(made - wanted))
        self._db.put_doc(ROUTES, {"cidrs": sorted(wanted)})


def _route(add: list[str], remove: list[str]) -> None:
    for cidr in add:
        try:
            network.add_unreachable(cidr)
        except errors.VkFargateError as exc:
            log.error("service CIDR %s is not routed: %s", cidr, exc)
    for cidr in remove:
        network.remove_unreachable(cidr)
