"""Translating between the API's microVMs and the files a shim reads and writes. Pure.

``spec_for`` turns a placed microVM into the shim's ``spec.json`` (images resolved to
argv here, so a shim never needs the image table); ``fold`` turns a shim's
``status.json`` into the API's state, reason and container statuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vk_fargate.fleet import models
from vk_fargate.fleetd import config, images, sandbox

PHASE_STATE: dict[str, models.MicroVMState] = {
    "starting": "provisioning",
    "init": "running",
    "running": "running",
    "stopping": "stopping",
    "exited": "stopped",
}
# Shim exit reasons that mean the microVM failed rather than ran to its end.
FAILED_REASONS = frozenset({"SandboxError", "BootTimeout", "HostLost"})


def _containers(
    items: list[models.Container],
    table: dict[str, config.Image],
    vm_dir: Path,
    ip: str,
    prepared: dict[str, sandbox.ShimContainer],
) -> list[sandbox.ShimContainer]:
    out = []
    for c in items:
        if c.name in prepared:  # from its image (``provision.prepare``)
            out.append(prepared[c.name])
            continue
        resolved = images.resolve(c, table, sandbox=str(vm_dir))
        shim_c = sandbox.ShimContainer(
            name=c.name,
            argv=resolved.argv,
            env={e.name: e.rendered(ip) for e in c.env},
            working_dir=c.working_dir,
        )
        if resolved.error:
            shim_c["error"] = resolved.error
        out.append(shim_c)
    return out


def spec_for(
    vm: models.MicroVM,
    *,
    cfg: config.FleetConfig,
    runtime: models.RuntimeName,
    vm_dir: Path,
    cgroups: list[str],
    netns: str | None,
    network: sandbox.ShimNetwork | None,
    notify_socket: Path,
    prepared: dict[str, sandbox.ShimContainer] | None = None,
    runc_root: Path | None = None,
    cgroup_parent: str | None = None,
) -> sandbox.ShimSpec:
    spec = vm.spec
    ip = vm.status.private_ip or ""
    ready = prepared or {}
    shim = sandbox.ShimSpec(
        id=vm.id,
        runtime=runtime,
        vcpu_millis=spec.vcpu_millis,
        mem_mib=spec.mem_mib,
        restart_policy=spec.restart_policy,
        termination_grace_seconds=spec.termination_grace_seconds,
        backoff_initial_seconds=cfg.restart_backoff.initial_seconds,
        backoff_max_seconds=cfg.restart_backoff.max_seconds,
        init_containers=_containers(spec.init_containers, cfg.images, vm_dir, ip, ready),
        containers=_containers(spec.containers, cfg.images, vm_dir, ip, ready),
        netns=netns,
        cgroups=cgroups,
        network=network,
        notify_socket=str(notify_socket),
    )
    if runc_root is not None:
        shim["runc_root"] = str(runc_root)
    if cgroup_parent is not None:
        shim["cgroup_parent"] = cgroup_parent
    return shim


def fold(
    status: models.MicroVMStatus, shim: dict[str, Any], *, deleting: bool, stop_reason: str | None
) -> tuple[models.MicroVMStatus, models.MicroVMState, str | None]:
    """The status with the shim's container statuses, and the state and reason it implies."""
    phase = shim["phase"]
    state = PHASE_STATE.get(phase, "provisioning")
    reason = shim.get("reason")
    if deleting and state in ("provisioning", "running"):
        state = "stopping"
    if phase == "exited" and reason in FAILED_REASONS:
        state = "failed"
    elif phase in ("stopping", "exited") and stop_reason:
        reason = stop_reason
    folded = models.MicroVMStatus.model_validate(
        {
            **status.model_dump(),
            "init_containers": shim["init_containers"],
            "containers": shim["containers"],
            "started_at": shim.get("started_at"),
        }
    )
    return folded, state, reason
