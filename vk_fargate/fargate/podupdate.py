"""What a change to a bound pod's spec asks of its microVM: the kubelet's UpdatePod. Pure.

The API server lets a running pod change in three ways that reach its node:

- a container's ``image``: the kubelet kills that container ("definition changed")
  and starts it again with the new image. Here: the microVM's spec with the new
  image fields, which the fleet applies in place (``backend.MicroVMs.update_microvm``);
- ``activeDeadlineSeconds`` added or shortened: once the pod has been active that long
  it fails, ``DeadlineExceeded``, and its containers are killed;
- containers' ``resources`` (the resize subresource): a Fargate microVM is sized at
  launch, so a resize to another Fargate size cannot be made. The kubelet's word for a
  resize it cannot make is the condition ``PodResizePending``, reason ``Infeasible``.
  A resize that keeps the provisioned size (Fargate rounds up) needs nothing. The API
  server (1.36) refuses by itself a resize past the node's allocatable (the whole
  size, 403) and any resize of a pod whose running containers report no
  ``resources`` in their status (422, "node without support for resize"): so each
  container reports what it has (``allocated``), as the kubelet's do, and what is
  left to refuse here is a resize within the node that Fargate's 256 MiB overhead
  pushes to the next size.

Regular init containers have run to completion: as the kubelet, a changed image
there does not run them again (the microVM keeps what it ran).
"""

from __future__ import annotations

import datetime
from typing import Any

from vk_fargate.fargate import sizing
from vk_fargate.fleet import models

JSON = dict[str, Any]
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
RESIZE_CONDITION = "PodResizePending"
RESIZE_REASON = "Infeasible"
RESOURCE_KEYS = ("requests", "limits")


def long_running(spec: JSON) -> list[JSON]:
    """The containers the fleet runs for the pod's life: sidecars (init containers
    with ``restartPolicy: Always``) and app containers (as the scheduler places them)."""
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return [*sidecars, *(spec.get("containers") or [])]


def changed_images(spec: JSON, vm_spec: models.MicroVMSpec) -> list[str]:
    """Names of the long-running containers whose image in pod ``spec`` is not the one
    the microVM runs, in the pod's order."""
    sidecars = [c for c in vm_spec.init_containers if c.restart_policy == "Always"]
    running = {c.name: c.image for c in [*sidecars, *vm_spec.containers]}
    return [
        c["name"]
        for c in long_running(spec)
        if c["name"] in running and (c.get("image") or "") != running[c["name"]]
    ]


def with_images(
    current: models.MicroVMSpec, wanted: models.MicroVMSpec, names: list[str]
) -> models.MicroVMSpec:
    """``current`` (the microVM's spec, as the fleet answers it) with the image fields of
    containers ``names`` taken from ``wanted`` (the spec the pod asks for now): the
    only difference the fleet applies in place. Secret values, which the fleet never
    answers, come from ``wanted`` too, so the update does not blank them."""
    fresh = {c.name: c for c in [*wanted.init_containers, *wanted.containers]}

    def change(c: models.Container) -> models.Container:
        new = fresh.get(c.name)
        if new is None:
            return c
        secrets = {e.name: e.value for e in new.env if e.secret}
        env = [
            e.model_copy(update={"value": secrets[e.name]}) if e.secret and e.name in secrets else e
            for e in c.env
        ]
        update: JSON = {"env": env}
        if c.name in names:
            update.update(
                image=new.image,
                image_pull_policy=new.image_pull_policy,
                pull_credentials=new.pull_credentials,
            )
        return c.model_copy(update=update)

    return current.model_copy(
        update={
            "init_containers": [change(c) for c in current.init_containers],
            "containers": [change(c) for c in current.containers],
        }
    )


def deadline_left(pod: JSON, now: datetime.datetime) -> float | None:
    """Seconds until the pod's ``activeDeadlineSeconds`` runs out, counted from its
    ``status.startTime`` as the kubelet does (0 or less: exceeded); None without a
    deadline or before the pod started."""
    deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    started = (pod.get("status") or {}).get("startTime")
    if deadline is None or not started:
        return None
    began = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
    return float(deadline) - (now - began).total_seconds()


def resize_refusal(spec: JSON, vm_spec: models.MicroVMSpec) -> str | None:
    """Why the pod's resources cannot be had in place (the ``PodResizePending``
    message), or None when its microVM's size still covers them."""
    try:
        wanted = sizing.size(spec)
    except (sizing.TooLarge, ValueError) as exc:
        return f"the resized pod fits no Fargate size: {exc}"
    have = sizing.Size(vm_spec.vcpu_millis, vm_spec.mem_mib, vm_spec.ephemeral_gib)
    if wanted == have:
        return None
    return (
        f"Fargate sizes a pod's microVM at launch: it was provisioned "
        f"{have.capacity_provisioned} and cannot become {wanted.capacity_provisioned} in "
        "place; recreate the pod (or roll its Deployment) to resize it"
    )


def allocated(spec: JSON, status: JSON, *, refused: bool) -> dict[str, JSON]:
    """The resources each container has, for its ``containerStatuses[].resources`` (the
    kubelet's actual resources): what the spec asks while the microVM's size covers it
    (a resize within it is done at once), what was reported before while a resize is
    refused (``status`` is the pod's, as last written)."""
    asked = {
        c["name"]: {k: v for k, v in (c.get("resources") or {}).items() if k in RESOURCE_KEYS}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }
    if not refused:
        return asked
    before = {
        c["name"]: c["resources"]
        for c in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        if c.get("resources") is not None
    }
    return {name: before.get(name, wanted) for name, wanted in asked.items()}
