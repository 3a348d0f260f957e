"""What one microVM holds on its host, set up and given back.

Provisioning is three steps: cgroups sized to the microVM (a QEMU process gets 256 MiB
more for itself), a network namespace on the subnet's bridge for the ``process``
runtime (a ``microvm`` shim makes its own tap on that bridge), and the shim, started
with its spec once every volume is ready (``volumes``, made as the daemon accepts the
microVM) and its images are pulled. ``release`` undoes all of it and is safe to call
twice or after a failure halfway. The daemon (``daemon.Fleet``) owns the microVM's
states and records; this module owns the host's resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path

from vk_fargate.fleet import models
from vk_fargate.fleetd import (
    bundles,
    cgroups,
    config,
    imagestore,
    ipam,
    network,
    rootfs,
    sandbox,
    services,
    shims,
    supervisor,
    volumes,
)

KILL_MARGIN = 5.0
"""Seconds past the grace period before a stuck shim and its cgroups are SIGKILLed."""
QEMU_OVERHEAD_MIB = 256
"""A QEMU process needs guest RAM plus ~100 MB of its own (microvm-facts.md)."""


class Record:
    """A microVM plus what the daemon needs to run it."""

    def __init__(self, vm: models.MicroVM, vm_dir: Path) -> None:
        self.vm = vm
        self.dir = vm_dir
        self.shim: supervisor.Shim | None = None
        self.secrets: models.SecretEnv = {}  # blanked in ``vm``: see ``keep_secrets``
        self.cgroups: list[str] = []
        self.deleting = False
        self.stop_reason: str | None = None  # why the daemon stopped it, if it did
        self.stop_message: str | None = None  # and in what words
        self.status_mtime = 0.0
        # The last shim event published (None: none read yet; those a first read finds
        # are older than this daemon, which may have published them, so they are skipped).
        self.event_seq: int | None = None

    @property
    def state(self) -> models.MicroVMState:
        return self.vm.status.state

    @property
    def holds_resources(self) -> bool:
        return self.state not in models.FINAL_STATES


@dataclasses.dataclass(frozen=True)
class Host:
    """This host's ways of running microVMs, as the daemon detected them."""

    cfg: config.FleetConfig
    limits: cgroups.Mode
    networking: network.Mode
    netns_prefix: str  # names this fleet's network namespaces apart from other fleets'
    images: imagestore.ImageStore  # the host's image service: pulls, unpacks, GC
    spawner: supervisor.Spawner  # forks the shims
    services: services.Services  # the rules of the namespaces, the relays among them

    @property
    def runc_root(self) -> Path:
        return self.cfg.state_dir / "runc"

    def sandbox_key(self, vm_id: str) -> str:
        return f"{self.netns_prefix}{vm_id}"

    @property
    def notify_socket(self) -> Path:
        return self.cfg.state_dir / "notify.sock"


async def provision(
    record: Record,
    host: Host,
    *,
    runtime: models.RuntimeName,
    pool: ipam.SubnetPool,
    bridge: str,
    report: bundles.Report | None = None,
    credentials: Callable[[], dict[str, str]] | None = None,
) -> None:
    """Cgroups, network and shim for ``record``'s microVM; no shim if it is being deleted
    meanwhile. Raises whatever the host refused; ``release`` cleans up after it."""
    vm = record.vm
    record.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    overhead = QEMU_OVERHEAD_MIB if runtime == "microvm" else 0
    record.cgroups = cgroups.create(
        host.limits, vm.id, vcpu_millis=vm.spec.vcpu_millis, mem_mib=vm.spec.mem_mib + overhead
    )
    netns = None
    shim_network = None
    if host.networking == "netns":
        shim_network = sandbox.ShimNetwork(
            ip=vm.status.private_ip or "",
            prefix_len=pool.cidr.prefixlen,
            gateway=str(pool.gateway),
            bridge=bridge,
        )
        if runtime == "process":
            netns = await network.create_sandbox(
                host.sandbox_key(vm.id),
                ip=ipaddress.IPv4Address(vm.status.private_ip),
                prefix_len=pool.cidr.prefixlen,
                gateway=pool.gateway,
                bridge=bridge,
            )
            target = services.Target(host.sandbox_key(vm.id), vm, str(pool.gateway))
            await host.services.program(target, fresh=True)  # before any container
    if volumes.waiting_for(record.dir, vm.spec):  # as the kubelet: no pull before them
        creating = {"state": "waiting", "reason": "ContainerCreating", "restart_count": 0}
        (report or (lambda _init, _app: None))(
            [{"name": c.name, **creating} for c in vm.spec.init_containers],
            [{"name": c.name, **creating} for c in vm.spec.containers],
        )
        await volumes.until_ready(
            record.dir, lambda: record.vm.spec, cancelled=lambda: record.deleting
        )
        if record.deleting:
            return
    prepared = await bundles.prepare_until_pulled(
        lambda: with_secrets(record),
        record.dir,
        host.images,
        netns=netns,
        backoff=(host.cfg.restart_backoff.initial_seconds, host.cfg.restart_backoff.max_seconds),
        report=report or (lambda _init, _app: None),
        cancelled=lambda: record.deleting,
        credentials=credentials or dict,
    )
    if prepared is None or record.deleting:
        return
    spec = shims.spec_for(
        record.vm,  # the spec ``prepared`` was made from: it may have changed meanwhile
        cfg=host.cfg,
        runtime=runtime,
        cgroups=record.cgroups,
        netns=netns,
        network=shim_network,
        notify_socket=host.notify_socket,
        prepared=prepared,
        runc_root=host.runc_root,
        cgroup_parent=cgroups.relative(host.limits, vm.id),
    )
    record.shim = await supervisor.launch(record.dir, spec, host.spawner)


SECRETS = "secrets.json"


def with_secrets(record: Record) -> models.MicroVM:
    """``record``'s microVM with its secret env values, as its containers get them."""
    vm = record.vm
    return vm.model_copy(update={"spec": models.with_secrets(vm.spec, record.secrets)})


def keep_secrets(record: Record) -> None:
    """Keep the secret env values of ``record`` beside it (mode 0600, in a 0700 folder,
    removed with it), for a provisioning that a restart of the daemon cuts short or a
    container started again from a new image after one."""
    if record.secrets:
        record.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sandbox.write_json(record.dir / SECRETS, record.secrets)


def load_secrets(record: Record) -> None:
    found = sandbox.read_json(record.dir / SECRETS)
    record.secrets = found if isinstance(found, dict) else {}


async def shim_exit(shim: supervisor.Shim, *, timeout: float) -> None:
    """Wait until the shim has exited, or ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while supervisor.alive(shim):
                await asyncio.sleep(0.05)


async def release(record: Record, host: Host) -> None:
    """Give back what a stopped microVM held on the host (not its record or address):
    its shim and every process in its cgroups, its containers' root filesystems, its
    network namespace, its cgroups."""
    if record.shim is not None:
        await shim_exit(record.shim, timeout=KILL_MARGIN)
        supervisor.kill(record.shim, record.cgroups)
        await shim_exit(record.shim, timeout=KILL_MARGIN)
    rootfs.unmount(record.dir / "bundles")
    if host.networking == "netns":
        await network.delete_sandbox(host.sandbox_key(record.vm.id))
        host.services.forget(host.sandbox_key(record.vm.id))
    cgroups.remove(host.limits, record.vm.id)
