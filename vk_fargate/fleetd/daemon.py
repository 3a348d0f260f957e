"""The fleet: hosts, placement, and the life of every microVM, persisted and announced.

Life of a microVM: ``put`` places it (host, subnet, address) under one lock, so two
creates never take the same room, records it ``pending`` and starts a named task that
provisions it (cgroups, network namespace, shim: ``provision``) to ``provisioning``; a
restart of the daemon provisions again what it had accepted but not finished.
From then on the shim's status file drives it (``running`` .. ``stopped``/``failed``),
read when the shim pings the notify socket and, as a safety net, by a sweep every second
that also notices dead shims (``failed``/``HostLost``). ``delete`` stops it and forgets
it once stopped (a ``deleted`` event); the request is stored too, so a restart finishes
it. A ``put`` changing only containers' images takes the new spec and rolls those
containers to it (``inplace``); any other change is refused. Its volumes are made as
``put`` accepts it, their files swapped by ``put_volume``, and a watch evicts it when a
disk emptyDir outgrows its limit (``volumes``). Every change is stored, then
published as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import ipaddress
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import (
    agentmux,
    cgroups,
    config,
    events,
    execs,
    hostinfo,
    imagestore,
    inplace,
    ipam,
    network,
    placement,
    portstreams,
    provision,
    rootfs,
    sandbox,
    services,
    shims,
    specdiff,
    stats,
    store,
    streams,
    supervisor,
    volumes,
)
from vk_fargate.fleetd.runtimes import microvm

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0  # seconds between safety sweeps over all shims
DELETING = "deleting/"  # key prefix of the stored deletions not yet done, by microVM id
EVICTED = "evicted/"  # key prefix of the evictions' messages, kept until the purge


class Fleet:
    def __init__(self, cfg: config.FleetConfig, db: store.Store) -> None:
        self.cfg = cfg
        self.db = db
        self.bus = events.Bus(db, retention=cfg.event_retention)
        self.vms: dict[str, provision.Record] = {}
        self.pools = {
            s.id: ipam.SubnetPool(s.id, s.cidr, s.zone, quarantine=cfg.address_quarantine_seconds)
            for s in cfg.subnets
        }
        self.hosts = {h.id: hostinfo.HostInfo(h) for h in cfg.hosts}
        self.networking: network.Mode = network.detect(cfg.networking)
        self.limits: cgroups.Mode = cgroups.detect()
        state_key = hashlib.sha1(str(cfg.state_dir.resolve()).encode()).hexdigest()[:6]
        store = imagestore.ImageStore(
            cfg.state_dir / "images",
            cfg.registries,
            budget_bytes=cfg.image_budget_mib * 2**20 if cfg.image_budget_mib else None,
        )
        self.host = provision.Host(
            cfg,
            self.limits,
            self.networking,
            f"{state_key}-",
            store,
            supervisor.Spawner(),
            services.Services(
                db,
                networking=self.networking,
                subnets={p.id: p.cidr for p in self.pools.values()},
            ),
        )
        self._place_lock = asyncio.Lock()
        self._volume_lock = asyncio.Lock()  # one swap of files at a time
        self.pull_credentials: dict[str, dict[str, str]] = {}  # vm id -> container -> user:pw
        self._tasks: set[asyncio.Task[None]] = set()
        self._bridges: dict[str, str] = {}
        self._sessions: dict[str, int] = {}  # vm id -> exec and port sessions open

    # start and stop

    async def start(self) -> None:
        if self.networking == "netns":
            for pool in self.pools.values():
                self._bridges[pool.id] = network.ensure_bridge(pool.id, pool.cidr, pool.gateway)
        for host_id, (state, deadline) in self.db.host_states().items():
            if host_id in self.hosts:
                self.hosts[host_id].restore(state, deadline)
        unfinished = []
        for doc, pid, start in self.db.microvms():
            record = self._adopt(models.MicroVM.model_validate(doc), pid, start)
            if record is not None:
                unfinished.append(record)
        for pool in self.pools.values():
            pool.restore(self.db.get_doc(_pool_key(pool)) or {})
        for host in self.hosts.values():
            if host.state == "draining":
                self._spawn(self._enforce_drain(host.config.id), f"drain-{host.config.id}")
        if self.networking == "netns":  # namespaces of microVMs that did not survive
            live = {self.host.sandbox_key(i) for i, r in self.vms.items() if r.shim is not None}
            await network.sweep(self.host.netns_prefix, live)
        # The host's routes for the stored Service tables, and the rules of the
        # namespaces that survived (pointing at relays that listen again).
        await self.host.services.restore(self._service_targets(None))
        deletions = self.db.docs(DELETING)  # asked for before the restart: finish them
        for record in unfinished:  # after the sweep, which would take their namespaces
            if record.vm.id not in deletions:
                self._spawn(self._provision(record, again=True), f"provision-{record.vm.id}")
        for vm_id, asked in deletions.items():
            if vm_id in self.vms:
                await self.delete(vm_id, grace=asked.get("grace"))
            else:
                self.db.delete_doc(DELETING + vm_id)
        self._spawn(self._sweep_forever(), "fleet-sweep")
        self._spawn(self._enforce_volume_limits(), "volume-limits")

    def _adopt(
        self, vm: models.MicroVM, pid: int | None, start: int | None
    ) -> provision.Record | None:
        """Take back a microVM of the daemon's last run; the record if its provisioning
        never finished (its shim never started), which ``start`` does again: a PUT
        answered 201 is a promise, and only a microVM whose shim died is lost."""
        record = provision.Record(vm, self.cfg.state_dir / "microvms" / vm.id)
        record.cgroups = [str(p) for p in cgroups.paths(self.limits, vm.id)]
        evicted = self.db.get_doc(EVICTED + vm.id)  # its shim may still be stopping
        if evicted is not None:
            record.stop_reason, record.stop_message = "Evicted", evicted.get("message")
        self.vms[vm.id] = record
        if vm.status.private_ip and vm.status.subnet in self.pools:
            self.pools[vm.status.subnet].used.add(ipaddress.IPv4Address(vm.status.private_ip))
        if not record.holds_resources:
            return None
        provision.load_secrets(record)  # for a provisioning again, or a container rolled
        if pid is None and vm.status.state in ("pending", "provisioning"):
            record.shim = supervisor.forked_for(record.dir)
            if record.shim is None:
                return record
            self._save(record)  # its shim was forked just before the daemon died
        else:
            record.shim = supervisor.adopt(pid, start)
        if record.shim is None:
            if record.stop_reason == "Evicted":  # its shim ended as asked
                self._set_state(record, "failed", reason="Evicted", message=record.stop_message)
            else:
                self._set_state(
                    record,
                    "failed",
                    reason="HostLost",
                    message="the microVM did not survive a restart of the fleet daemon",
                )
            self._spawn(provision.release(record, self.host), f"cleanup-{vm.id}")
        else:
            self.refresh(vm.id)
            if inplace.behind(record):  # an update the last run stored, not handed over
                self._roll(record)
        return None

    async def close(self, *, stop_microvms: bool) -> None:
        """Stop background work; with ``stop_microvms`` also every microVM and bridge."""
        if stop_microvms:
            await asyncio.gather(
                *(self.delete(i, grace=2) for i in list(self.vms)), return_exceptions=True
            )
            await self._wait_until(lambda: not self.vms, timeout=30)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.spawner.close()
        await self.host.services.close(remove_routes=stop_microvms)
        if self.networking == "netns" and stop_microvms:
            await network.sweep(self.host.netns_prefix, set())
        if self.networking == "netns":
            used = {r.vm.status.subnet for r in self.vms.values() if r.holds_resources}
            for subnet_id in self._bridges:
                if subnet_id not in used:
                    network.remove_bridge(subnet_id)

    # queries

    def get(self, vm_id: str) -> models.MicroVM:
        record = self.vms.get(vm_id)
        if record is None:
            raise errors.NotFound(f"microVM {vm_id} not found")
        return record.vm

    def select(self, selector: dict[str, str]) -> models.MicroVMList:
        items = [
            r.vm
            for r in self.vms.values()
            if all(r.vm.spec.labels.get(k) == v for k, v in selector.items())
        ]
        return models.MicroVMList(items=items, cursor=self.bus.cursor)

    def stats(self, vm_id: str) -> models.MicroVMStats:
        """CPU, memory and network of a running microVM (see ``stats``); Conflict without
        any readings."""
        record = self.vms.get(vm_id)
        if record is None:
            raise errors.NotFound(f"microVM {vm_id} not found")
        if record.state not in ("running", "stopping") or record.shim is None:
            raise errors.Conflict(f"microVM {vm_id} is {record.state}: it has no stats")
        host = self.hosts.get(record.vm.status.host or "")
        runtime = host.config.runtime if host is not None else None
        interface = None
        if self.networking == "netns" and runtime is not None:
            interface = (
                network.host_end(self.host.sandbox_key(vm_id))
                if runtime == "process"
                else microvm.default_tap(vm_id)
            )
        found = stats.read(
            self.limits,
            record.vm,
            record.cgroups,
            per_container=runtime == "process",
            interface=interface,
        )
        if found is None:
            raise errors.Conflict(f"microVM {vm_id} has no stats: this host has no cgroups")
        return found

    # Services (``services``)

    def get_services(self, cluster: str) -> models.ServiceTable:
        return self.host.services.get(cluster)

    async def put_services(self, cluster: str, table: models.ServiceTable) -> models.ServiceTable:
        targets = functools.partial(self._service_targets, cluster)
        return await self.host.services.put(cluster, table, targets)

    def _service_targets(self, cluster: str | None) -> list[services.Target]:
        """The namespaces to program: of every ``process`` microVM holding resources
        (of ``cluster``, if given) that got past ``pending``."""
        return [
            services.Target(
                self.host.sandbox_key(r.vm.id), r.vm, str(self.pools[r.vm.status.subnet].gateway)
            )
            for r in self.vms.values()
            if r.holds_resources
            and r.state != "pending"
            and r.vm.status.subnet in self.pools
            and self._runtime(r) == "process"
            and (cluster is None or services.cluster_of(r.vm) == cluster)
        ]

    # exec and port sessions (``streams``), by the microVM's runtime

    @contextlib.contextmanager
    def session_slot(self, vm_id: str) -> Iterator[None]:
        """Hold one of the microVM's exec/port sessions; TooManySessions past the limit."""
        held = self._sessions.get(vm_id, 0)
        if held >= self.cfg.max_sessions_per_microvm:
            raise errors.TooManySessions(
                f"microVM {vm_id} has {held} exec and port sessions open, the most allowed"
            )
        self._sessions[vm_id] = held + 1
        try:
            yield
        finally:
            self._sessions[vm_id] -= 1
            if not self._sessions[vm_id]:
                del self._sessions[vm_id]

    async def open_exec(
        self, vm_id: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> streams.Session:
        """``command`` started in ``container``'s running instance."""
        record = self._streamable(vm_id)
        spec_names = {c.name for c in [*record.vm.spec.init_containers, *record.vm.spec.containers]}
        if container not in spec_names:
            raise errors.NotFound(f"container {container} is not in microVM {vm_id}")
        found = [
            c
            for c in [*record.vm.status.init_containers, *record.vm.status.containers]
            if c.name == container and c.state == "running" and c.container_id
        ]
        if not found:
            raise errors.Conflict(f"container {container} is not running")
        if self._runtime(record) == "microvm":  # through the guest's agent
            opening = agentmux.open_exec(
                record.dir, self._shim_spec(record), container, command, stdin=stdin, tty=tty
            )
            return await _through_agent(vm_id, opening)
        session = execs.ExecSession(
            ["runc", "--root", str(self.host.runc_root)],
            (found[0].container_id or "").removeprefix("vkfargate://"),
            command,
            stdin=stdin,
            tty=tty,
            scratch=record.dir / "execs" / uuid.uuid4().hex,
        )
        try:
            await session.start()
        except OSError as exc:
            await session.close()
            raise errors.FleetError(f"cannot start runc exec: {exc}") from exc
        return session

    async def open_port(self, vm_id: str, port: int) -> streams.Session:
        """A TCP connection to ``port`` in the microVM's network namespace."""
        record = self._streamable(vm_id)
        shim_spec = self._shim_spec(record)
        if self._runtime(record) == "microvm":
            return await _through_agent(vm_id, agentmux.open_port(record.dir, shim_spec, port))
        session = portstreams.PortSession(shim_spec["netns"], port)
        await session.start()
        return session

    @staticmethod
    def _shim_spec(record: provision.Record) -> sandbox.ShimSpec:
        shim_spec: sandbox.ShimSpec | None = sandbox.read_json(record.dir / "spec.json")
        if shim_spec is None:
            raise errors.Conflict(f"microVM {record.vm.id} is not running")
        return shim_spec

    def _streamable(self, vm_id: str) -> provision.Record:
        record = self.vms.get(vm_id)
        if record is None:
            raise errors.NotFound(f"microVM {vm_id} not found")
        if record.state != "running" or record.shim is None or record.deleting:
            raise errors.Conflict(f"microVM {vm_id} is {record.state}, not running")
        return record

    def host_models(self) -> list[models.Host]:
        return [self._host_model(h) for h in self.hosts.values()]

    def _host_model(self, host: hostinfo.HostInfo) -> models.Host:
        placed = [
            r for r in self.vms.values() if r.holds_resources and r.vm.status.host == host.config.id
        ]
        return host.model(
            placed=[r.vm.spec for r in placed], limits=self.limits, networking=self.networking
        )

    # create

    async def put(self, vm_id: str, spec: models.MicroVMSpec) -> tuple[models.MicroVM, bool]:
        """Create the microVM, return the existing one with this very spec, or change
        its containers' images in place (``update``). Pull credentials are kept in
        memory for its pulls, never stored."""
        spec, credentials = models.without_credentials(spec)
        spec, secrets = models.without_secrets(spec)
        contents = volumes.decode_all(spec)  # kept in the volumes' folders only
        spec, _ = volumes.split(spec)
        async with self._place_lock:
            existing = self.vms.get(vm_id)
            if existing is not None and specdiff.comparable(existing.vm.spec) != (
                specdiff.comparable(spec)
            ):
                self.update(existing, spec, secrets)
            if credentials:
                self.pull_credentials[vm_id] = credentials
            if existing is not None:
                return existing.vm, False
            vm = self._place(vm_id, spec)
            record = provision.Record(vm, self.cfg.state_dir / "microvms" / vm_id)
            try:
                volumes.create(record.dir, spec, contents)
            except OSError as exc:
                volumes.remove(record.dir)
                pool = self.pools[vm.status.subnet or ""]
                pool.release(ipaddress.IPv4Address(vm.status.private_ip), now=time.time())
                raise errors.FleetError(f"cannot make the volumes of {vm_id}: {exc}") from exc
            record.secrets = secrets
            record.event_seq = 0  # a new shim: each of its events is news
            provision.keep_secrets(record)
            self.vms[vm_id] = record
            self._save(record)
        self._spawn(self._provision(record), f"provision-{vm_id}")
        return vm, True

    def update(
        self, record: provision.Record, spec: models.MicroVMSpec, secrets: models.SecretEnv
    ) -> None:
        """Take ``spec``, which differs from the microVM's only in its containers'
        images, and roll the changed containers to them (``inplace``); Conflict naming
        what else changed, or why this microVM cannot change. A container started again
        gets the values of ``secrets`` as they are now, as the kubelet reads a Secret
        as it starts a container."""
        inplace.check(record, spec, runtime=self._runtime(record))
        spec = spec.model_copy(update={"volumes": record.vm.spec.volumes})  # theirs: PUT files
        record.vm = record.vm.model_copy(update={"spec": spec})
        record.secrets = secrets
        provision.keep_secrets(record)
        self._save(record)  # a provisioning under way pulls the new images itself
        if record.shim is not None:
            self._roll(record)

    def _roll(self, record: provision.Record) -> None:
        """Roll ``record``'s containers to its spec's images, unless a roll is under way
        (it looks at the spec again before it ends)."""
        vm_id = record.vm.id
        name = f"roll-{vm_id}"
        if self._runtime(record) != "process" or any(
            t.get_name() == name and not t.done() for t in self._tasks
        ):
            return

        async def roll() -> None:
            # A shim takes its SIGHUP once it reports (``running``), not while it starts.
            while record.state in ("pending", "provisioning") and not record.deleting:
                await asyncio.sleep(0.1)
            await inplace.roll(
                record,
                self.host,
                credentials=lambda: self.pull_credentials.get(vm_id, {}),
            )

        self._spawn(roll(), name)

    async def put_volume(self, vm_id: str, name: str, files: models.FileSet) -> None:
        """Swap the files of ``files`` volume ``name`` at once (``volumes.write``): the
        running containers see the new set; a pending volume becomes ready and, once
        all are, the microVM's containers start. The stored spec takes the new list of
        files, without their contents."""
        record = self.vms.get(vm_id)
        if record is None:
            raise errors.NotFound(f"microVM {vm_id} not found")
        state = "stopping" if record.deleting else record.state
        decoded = volumes.checked(record.vm, state, name, files)
        async with self._volume_lock:
            if record.deleting or not record.holds_resources or self.vms.get(vm_id) is not record:
                raise errors.Conflict(
                    f"microVM {vm_id} is stopping; its volumes can no longer change"
                )
            await asyncio.to_thread(volumes.write, volumes.root(record.dir) / name, decoded)
            spec = volumes.with_files(record.vm.spec, name, files)
            record.vm = record.vm.model_copy(update={"spec": spec})
            self._save(record)

    async def _enforce_volume_limits(self) -> None:
        """Every ``volume_check_seconds``, evict a running microVM whose disk emptyDir
        uses more than its ``size_limit_mib``, as the kubelet's eviction manager does:
        its containers are killed at once and it fails, ``Evicted``."""
        while True:
            await asyncio.sleep(self.cfg.volume_check_seconds)
            for record in list(self.vms.values()):
                limited = any(
                    v.empty_dir and v.empty_dir.size_limit_mib for v in record.vm.spec.volumes
                )
                if not limited or not self._evictable(record):
                    continue
                try:
                    over = await asyncio.to_thread(volumes.over_limit, record.dir, record.vm.spec)
                except Exception:  # one microVM's folder must not end the watch of all
                    log.exception("cannot measure the volumes of microVM %s", record.vm.id)
                    continue
                if over is not None and record.shim is not None and self._evictable(record):
                    message = volumes.eviction_message(over)
                    log.info("evicting microVM %s: %s", record.vm.id, message)
                    record.stop_reason, record.stop_message = "Evicted", message
                    self.db.put_doc(EVICTED + record.vm.id, {"message": message})
                    self._set_state(record, "stopping", reason="Evicted", message=message)
                    supervisor.stop(record.shim, record.dir, 0)

    @staticmethod
    def _evictable(record: provision.Record) -> bool:
        return (
            record.state == "running"
            and not record.deleting
            and record.stop_reason is None
            and record.shim is not None
        )

    def _runtime(self, record: provision.Record) -> models.RuntimeName | None:
        host = self.hosts.get(record.vm.status.host or "")
        return host.config.runtime if host is not None else None

    def _place(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        spread: dict[str, int] | None = None
        if spec.spread_group is not None:
            spread = {}
            for r in self.vms.values():
                placed_in = r.vm.status.zone
                if r.holds_resources and r.vm.spec.spread_group == spec.spread_group and placed_in:
                    spread[placed_in] = spread.get(placed_in, 0) + 1
        hosts = list(self.hosts.values())
        only = _process_only(spec)  # what a microvm host's guest does not run yet
        if only:
            hosts = [h for h in hosts if h.config.runtime == "process"]
            if not hosts:
                raise errors.InvalidSpec(
                    f"{only} run on process hosts only, and this fleet has none (a microvm "
                    "host's guest does not run them yet)"
                )
        host, pool, wanted = placement.plan(
            spec,
            hosts=[self._load(h) for h in hosts],
            pools=self.pools,
            spread=spread,
            retry_after=self.cfg.retry_after_seconds,
        )
        address = pool.allocate(wanted, now=time.time())
        self.db.put_doc(_pool_key(pool), pool.state())
        now = models.now()
        status = models.MicroVMStatus(
            state="pending",
            host=host.id,
            zone=host.zone,
            subnet=pool.id,
            private_ip=str(address),
            created_at=now,
            updated_at=now,
        )
        return models.MicroVM(id=vm_id, spec=spec, status=status)

    def _load(self, host: hostinfo.HostInfo) -> placement.HostLoad:
        placed = [
            r.vm.spec
            for r in self.vms.values()
            if r.holds_resources and r.vm.status.host == host.config.id
        ]
        return host.load(placed)

    async def _provision(self, record: provision.Record, *, again: bool = False) -> None:
        """Provision ``record``'s microVM; ``again`` after a restart cut it short, first
        giving back what the cut-short attempt held (the pull starts over; the image
        store keeps the blobs it had)."""
        vm = record.vm
        try:
            if again:
                await provision.release(record, self.host)
            self._set_state(record, "provisioning")
            pool = self.pools[vm.status.subnet or ""]
            await provision.provision(
                record,
                self.host,
                runtime=self.hosts[vm.status.host or ""].config.runtime,
                pool=pool,
                bridge=self._bridges.get(pool.id, ""),
                report=functools.partial(self._report_waiting, record),
                credentials=lambda: self.pull_credentials.get(vm.id, {}),
            )
            if record.shim is not None:
                self._save(record)
                if inplace.behind(record):  # an update came as the shim was forked
                    self._roll(record)
            await self._collect_images()
        except Exception as exc:  # any provisioning failure fails the VM
            log.exception("provisioning microVM %s failed", vm.id)
            self._set_state(record, "failed", reason="ProvisioningFailed", message=str(exc))
            await provision.release(record, self.host)

    async def _collect_images(self) -> None:
        """Keep the image store within its budget (images of live microVMs stay)."""
        store = self.host.images
        in_use = {
            c.image
            for r in self.vms.values()
            if r.holds_resources
            for c in [*r.vm.spec.init_containers, *r.vm.spec.containers]
        }
        try:
            removed = await store.collect(in_use)
        except imagestore.PullError as exc:
            log.warning("image garbage collection failed: %s", exc.message)
            return
        if removed:
            log.info("removed %d unused images to stay within the image budget", len(removed))

    def _report_waiting(
        self, record: provision.Record, init: list[dict[str, Any]], app: list[dict[str, Any]]
    ) -> None:
        """Container states while the microVM waits for its images (before its shim)."""
        status = models.MicroVMStatus.model_validate(
            {
                **record.vm.status.model_dump(),
                "init_containers": init,
                "containers": app,
                "updated_at": models.now(),
            }
        )
        record.vm = record.vm.model_copy(update={"status": status})
        self._save(record)

    @property
    def notify_socket(self) -> Path:
        return self.host.notify_socket

    # status from shims

    def refresh(self, vm_id: str) -> None:
        """Fold the shim's status file into the record, if it changed."""
        record = self.vms.get(vm_id)
        if record is None or record.shim is None or not record.holds_resources:
            return
        path = record.dir / "status.json"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == record.status_mtime:
            return
        shim = supervisor.read_status(record.dir)
        if shim is None:
            return
        record.status_mtime = mtime
        self._apply(record, shim)

    def _apply(self, record: provision.Record, shim: dict[str, Any]) -> None:
        self._publish_events(record, shim.get("events") or [])
        status, state, reason = shims.fold(
            record.vm.status, shim, deleting=record.deleting, stop_reason=record.stop_reason
        )
        record.vm = record.vm.model_copy(update={"status": status})
        message = shim.get("message")
        if record.stop_message is not None and state in ("stopping", *models.FINAL_STATES):
            message = record.stop_message
        self._set_state(record, state, reason=reason, message=message, force=True)
        if state in models.FINAL_STATES:
            self._spawn(provision.release(record, self.host), f"cleanup-{record.vm.id}")

    def _publish_events(self, record: provision.Record, found: list[dict[str, Any]]) -> None:
        """Publish the shim's events (a failed probe, a kill for it) not yet published."""
        newest = max((e["seq"] for e in found), default=0)
        if record.event_seq is not None:
            for event in found:
                if event["seq"] > record.event_seq:
                    detail = {k: event[k] for k in ("container", "reason", "message", "warning")}
                    self.bus.publish("container", microvm_id=record.vm.id, container_event=detail)
        record.event_seq = max(newest, record.event_seq or 0)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for vm_id, record in list(self.vms.items()):
                self.refresh(vm_id)
                if (
                    record.holds_resources
                    and record.shim is not None
                    and not supervisor.alive(record.shim)
                ):
                    self.refresh(vm_id)
                    if record.holds_resources:
                        self._set_state(
                            record,
                            "failed",
                            reason="HostLost",
                            message="the microVM's shim process died",
                        )
                        self._spawn(provision.release(record, self.host), f"cleanup-{vm_id}")

    # delete

    async def delete(self, vm_id: str, *, grace: float | None = None) -> models.MicroVM:
        record = self.vms.get(vm_id)
        if record is None:
            raise errors.NotFound(f"microVM {vm_id} not found")
        if record.deleting:
            return record.vm
        record.deleting = True
        self.db.put_doc(DELETING + vm_id, {"grace": grace})  # a restart finishes it
        if not record.holds_resources or record.shim is None:
            if record.state in ("pending", "provisioning"):
                self._set_state(record, "stopping")
            self._spawn(self._purge_when_final(record), f"purge-{vm_id}")
            return record.vm
        grace = record.vm.spec.termination_grace_seconds if grace is None else grace
        self._set_state(record, "stopping")
        supervisor.stop(record.shim, record.dir, grace)
        self._spawn(self._stop_and_purge(record, grace), f"stop-{vm_id}")
        return record.vm

    async def _stop_and_purge(self, record: provision.Record, grace: float) -> None:
        shim = record.shim
        assert shim is not None
        await provision.shim_exit(shim, timeout=grace + provision.KILL_MARGIN)
        supervisor.kill(shim, record.cgroups)
        self.refresh(record.vm.id)
        if record.holds_resources:
            self._set_state(record, "stopped", reason="Stopped", force=True)
        await provision.release(record, self.host)
        self._purge(record)

    async def _purge_when_final(self, record: provision.Record) -> None:
        # A delete that raced provisioning: wait for the shim (if any) to appear, then stop it.
        await self._wait_until(
            lambda: (
                record.shim is not None
                or not record.holds_resources
                or self._provision_done(record)
            ),
            timeout=30,
        )
        if record.shim is not None and record.holds_resources:
            supervisor.stop(record.shim, record.dir, 0)
            await self._stop_and_purge(record, 0)
            return
        if record.holds_resources:
            self._set_state(record, "stopped", reason="Stopped")
        await provision.release(record, self.host)
        self._purge(record)

    def _provision_done(self, record: provision.Record) -> bool:
        return not any(t.get_name() == f"provision-{record.vm.id}" for t in self._tasks)

    def _purge(self, record: provision.Record) -> None:
        vm = record.vm
        self.pull_credentials.pop(vm.id, None)
        if self.vms.pop(vm.id, None) is None:
            return
        if vm.status.private_ip and vm.status.subnet in self.pools:
            pool = self.pools[vm.status.subnet]
            pool.release(ipaddress.IPv4Address(vm.status.private_ip), now=time.time())
            self.db.put_doc(_pool_key(pool), pool.state())
        self.db.delete_microvm(vm.id)
        self.db.delete_doc(DELETING + vm.id)
        self.db.delete_doc(EVICTED + vm.id)
        rootfs.unmount(record.dir / "bundles")  # never delete through a live mount
        volumes.remove(record.dir)
        shutil.rmtree(record.dir, ignore_errors=True)
        self.bus.publish("deleted", microvm_id=vm.id, microvm=vm.model_dump(mode="json"))

    # hosts

    async def host_action(self, host_id: str, action: models.HostAction) -> models.Host:
        host = self.hosts.get(host_id)
        if host is None:
            raise errors.NotFound(f"host {host_id} not found")
        if action.action_type == "Activate":
            host.activate()
        else:
            deadline = models.now() + datetime.timedelta(seconds=action.grace_seconds)
            host.drain(deadline)
            for record in self.vms.values():
                if record.holds_resources and record.vm.status.host == host_id:
                    notice = models.MaintenanceNotice(
                        host=host_id,
                        microvm_id=record.vm.id,
                        not_after=deadline,
                        message=f"host {host_id} draining, microVM {record.vm.id} will be "
                        f"stopped after {deadline.isoformat()}",
                    )
                    self.bus.publish(
                        "maintenance",
                        microvm_id=record.vm.id,
                        notice=notice.model_dump(mode="json"),
                    )
            self._spawn(self._enforce_drain(host_id), f"drain-{host_id}")
        self.db.put_host_state(host_id, host.state, host.deadline_text)
        model = self._host_model(host)
        self.bus.publish("host", host=model.model_dump(mode="json"))
        return model

    async def _enforce_drain(self, host_id: str) -> None:
        host = self.hosts[host_id]
        while host.state == "draining" and host.drain_deadline is not None:
            left = (host.drain_deadline - models.now()).total_seconds()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 1.0))
        if host.state != "draining":
            return
        for record in list(self.vms.values()):
            if record.holds_resources and record.vm.status.host == host_id and record.shim:
                record.stop_reason = "HostMaintenance"
                supervisor.stop(record.shim, record.dir, record.vm.spec.termination_grace_seconds)
                self._set_state(record, "stopping", reason="HostMaintenance")

    # plumbing

    def _set_state(
        self,
        record: provision.Record,
        state: models.MicroVMState,
        *,
        reason: str | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        status = record.vm.status
        if not force and status.state == state and status.reason == reason:
            return
        now = models.now()
        update: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "message": message,
            "updated_at": now,
        }
        if state in models.FINAL_STATES and status.finished_at is None:
            update["finished_at"] = now
        record.vm = record.vm.model_copy(update={"status": status.model_copy(update=update)})
        self._save(record)

    def _save(self, record: provision.Record) -> None:
        doc = record.vm.model_dump(mode="json")
        self.db.put_microvm(record.vm.id, doc, record.shim.identity if record.shim else None)
        self.bus.publish("microvm", microvm_id=record.vm.id, microvm=doc)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    @staticmethod
    async def _wait_until(done: Callable[[], bool], *, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    await asyncio.sleep(0.05)


async def _through_agent(
    vm_id: str, opening: Coroutine[Any, Any, streams.Session]
) -> streams.Session:
    """A session of a ``microvm`` guest's agent, its failures as the API's errors."""
    try:
        return await opening
    except agentmux.AgentUnavailable as exc:
        raise errors.FleetUnavailable(f"microVM {vm_id}'s guest agent: {exc}") from exc
    except LookupError as exc:
        raise errors.NotFound(str(exc)) from exc


def _process_only(spec: models.MicroVMSpec) -> str | None:
    """What in ``spec`` only process hosts run (probes, lifecycle hooks, sidecars,
    volumes, stdin/tty), said as a list, or None."""
    every = [*spec.init_containers, *spec.containers]
    found = []
    if any(c.startup_probe or c.liveness_probe or c.readiness_probe for c in every):
        found.append("probes")
    if any(c.post_start or c.pre_stop for c in every):
        found.append("lifecycle hooks")
    if any(c.restart_policy == "Always" for c in spec.init_containers):
        found.append("sidecars")
    if spec.volumes:
        found.append("volumes")
    if any(c.stdin or c.tty for c in every):
        found.append("stdin/tty")
    if not found:
        return None
    return ", ".join(found[:-1]) + " and " + found[-1] if len(found) > 1 else found[0]


def _pool_key(pool: ipam.SubnetPool) -> str:
    return f"ipam/{pool.id}"
