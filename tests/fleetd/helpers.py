"""Small builders and waits shared by the fleetd tests."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

from tests import waiting
from vk_fargate import errors
from vk_fargate.fleet import client, models


def new_id() -> str:
    return str(uuid.uuid4())


def spec(*containers: dict[str, Any], **fields: Any) -> models.MicroVMSpec:
    """A 0.25 vCPU / 512 MiB spec; containers as dicts (image defaults to busybox)."""
    items = [{"image": "busybox", **c} for c in containers]
    return models.MicroVMSpec.model_validate(
        {"vcpu_millis": 250, "mem_mib": 512, "containers": items, **fields}
    )


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "command": ["sh", "-c", script], **extra}


async def until_vm(
    fleet: client.FleetClient,
    vm_id: str,
    check: Callable[[models.MicroVM], bool],
    *,
    timeout: float = 30,
    what: str = "the microVM",
) -> models.MicroVM:
    async def probe() -> models.MicroVM | None:
        vm = await fleet.get_microvm(vm_id)
        return vm if check(vm) else None

    return await waiting.until(probe, timeout=timeout, what=what)


def container(vm: models.MicroVM, name: str) -> models.ContainerStatus:
    """The container's status; waiting with no reason before the shim reported any."""
    found = [c for c in [*vm.status.init_containers, *vm.status.containers] if c.name == name]
    return (
        found[0] if found else models.ContainerStatus(name=name, state="waiting", restart_count=0)
    )


async def forgotten(fleet: client.FleetClient, vm_id: str) -> bool:
    """Whether the fleet no longer knows microVM ``vm_id`` (deleted and purged)."""
    try:
        await fleet.get_microvm(vm_id)
    except errors.NotFound:
        return True
    return False


def route_via_bridge(ip: str) -> bool:
    """True when the kernel would send to ``ip`` over one of fleetd's bridges (check it
    before sending anything to a pod IP)."""
    route = json.loads(
        subprocess.run(
            ["ip", "-j", "route", "get", ip], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    return str(route.get("dev", "")).startswith("vkfbr")
