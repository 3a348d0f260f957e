"""Translating between the API's microVMs and the files a shim reads and writes. Pure.

``spec_for`` turns a placed microVM, its containers made ready from their images, into
the shim's ``spec.json``; ``fold`` turns a shim's ``status.json`` into the API's state,
reason and container statuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vk_fargate.fleet import models
from vk_fargate.fleetd import config, sandbox

PHASE_STATE: dict[str, models.MicroVMState] = {
    "starting": "provisioning",
    "init": "running",
    "running": "running",
    "stopping": "stopping",
    "exited": "stopped",
}
# Shim exit reasons that mean the microVM failed rather than ran to its end.
FAILED_REASONS = frozenset({"SandboxError", "BootTimeout", "HostLost"})
# Reasons the daemon stops a microVM for that fail it (the kubelet's evicted pod fails).
FAILED_STOPS = frozenset({"Evicted"})


def spec_for(
    vm: models.MicroVM,
    *,
    cfg: config.FleetConfig,
    runtime: models.RuntimeName,
    cgroups: list[str],
    netns: str | None,
    network: sandbox.ShimNetwork | None,
    notify_socket: Path,
    prepared: dict[str, sandbox.ShimContainer],
    runc_root: Path,
    cgroup_parent: str | None,
) -> sandbox.ShimSpec:
    """The shim's spec: ``prepared`` holds every container, made ready from its image
    (``bundles.prepare``) or carrying why it cannot run."""
    spec = vm.spec
    sidecars = [c for c in spec.init_containers if c.restart_policy == "Always"]
    shim = sandbox.ShimSpec(
        id=vm.id,
        runtime=runtime,
        vcpu_millis=spec.vcpu_millis,
        mem_mib=spec.mem_mib,
        restart_policy=spec.restart_policy,
        termination_grace_seconds=spec.termination_grace_seconds,
        backoff_initial_seconds=cfg.restart_backoff.initial_seconds,
        backoff_max_seconds=cfg.restart_backoff.max_seconds,
        init_containers=[prepared[c.name] for c in spec.init_containers],
        containers=[prepared[c.name] for c in spec.containers],
        netns=netns,
        cgroups=cgroups,
        network=network,
        notify_socket=str(notify_socket),
    )
    shim["runc_root"] = str(runc_root)
    shim["sidecars"] = [c.name for c in sidecars]  # placed on process hosts only
    probes = {c.name: _probes(c) for c in [*sidecars, *spec.containers]}
    shim["probes"] = {name: found for name, found in probes.items() if found}
    shim["lifecycle"] = {c.name: _lifecycle(c) for c in [*spec.init_containers, *spec.containers]}
    shim["attach"] = {
        c.name: {"stdin": c.stdin, "stdin_once": c.stdin_once, "tty": c.tty}
        for c in [*spec.init_containers, *spec.containers]
        if c.stdin or c.tty
    }
    if cgroup_parent is not None:
        shim["cgroup_parent"] = cgroup_parent
    return shim


def _lifecycle(c: models.Container) -> dict[str, Any]:
    """The container's hooks and termination message settings (``fleetd.hooks``)."""
    return c.model_dump(
        mode="json",
        include={
            "post_start",
            "pre_stop",
            "termination_message_path",
            "termination_message_policy",
        },
        exclude_none=True,
    )


def _probes(c: models.Container) -> dict[str, Any]:
    """The container's probes as the shim reads them (``fleetd.probes``)."""
    kinds = (
        ("startup", c.startup_probe),
        ("liveness", c.liveness_probe),
        ("readiness", c.readiness_probe),
    )
    return {kind: p.model_dump(mode="json") for kind, p in kinds if p is not None}


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
        if phase == "exited" and stop_reason in FAILED_STOPS:
            state = "failed"
    folded = models.MicroVMStatus.model_validate(
        {
            **status.model_dump(),
            "init_containers": shim["init_containers"],
            "containers": shim["containers"],
            "started_at": shim.get("started_at"),
        }
    )
    return folded, state, reason
