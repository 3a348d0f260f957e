"""UpdatePod: what the pod reconciler does when a bound pod's spec changed under it
(``fargate.podupdate`` says what changed; this module acts on it, as the kubelet).

- ``update``: a running pod whose containers' images changed gets its microVM updated
  in place; the fleet restarts those containers (``backend.MicroVMs.update_microvm``)
  and the kubelet's ``Killing`` "definition changed" event says so. A change the
  fleet cannot make is a warning event, never silence.
- ``past_deadline`` and ``kill``: a pod past its ``activeDeadlineSeconds`` is failed
  (``DeadlineExceeded``, the kubelet's event) and its microVM stopped with the pod's
  grace period; the pod stays, Failed, until it is deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pydantic

from vk_fargate import errors
from vk_fargate.fargate import dns, environment, podupdate, sizing
from vk_fargate.fleet import backend, models
from vk_fargate.k8s import events, kube
from vk_fargate.scheduler import scheduling


def past_deadline(pod: kube.JSON, current: kube.JSON, retry: Callable[[str, float], None]) -> bool:
    """Whether the pod has outlived its ``activeDeadlineSeconds`` (or was failed for it
    already; ``current`` is its status as last written). While it has not, ``retry``
    brings it back when the time comes."""
    if current.get("phase") == "Failed":
        return current.get("reason") == podupdate.DEADLINE_REASON
    if current.get("phase") == "Succeeded":
        return False
    left = podupdate.deadline_left(pod, models.now())
    if left is None:
        return False
    if left > 0:
        retry(pod["metadata"]["uid"], left)
        return False
    return True


async def kill(
    fleet: backend.MicroVMs,
    recorder: events.Recorder,
    pod: kube.JSON,
    vm: models.MicroVM,
    current: kube.JSON,
) -> None:
    """The kubelet's end of a pod past its deadline: its event (once), its running
    containers killed: the microVM stopped with the pod's grace period."""
    node = (pod.get("spec") or {}).get("nodeName")
    if current.get("phase") != "Failed":
        await recorder.record(
            pod,
            podupdate.DEADLINE_REASON,
            podupdate.DEADLINE_MESSAGE,
            component="kubelet",
            host=node,
        )
    if vm.status.state in models.FINAL_STATES or vm.status.state == "stopping":
        return
    for c in vm.status.containers:
        if c.state == "running":
            await recorder.record(
                pod, "Killing", f"Stopping container {c.name}", component="kubelet", host=node
            )
    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    with contextlib.suppress(errors.NotFound):  # gone already: what was asked
        await fleet.delete_microvm(pod["metadata"]["uid"], grace_seconds=grace)


async def update(
    fleet: backend.MicroVMs,
    recorder: events.Recorder,
    scheduler: scheduling.Scheduler,
    pod: kube.JSON,
    vm: models.MicroVM,
) -> models.MicroVM | None:
    """A running pod whose containers' images changed: its microVM updated in place
    (the fleet restarts those containers); the fleet's answer, or None when there was
    nothing to do or the change could not be made (a warning event says why)."""
    names = podupdate.changed_images(pod.get("spec") or {}, vm.spec)
    if not names or vm.status.state != "running":
        return None
    node = (pod.get("spec") or {}).get("nodeName")
    size = sizing.Size(vm.spec.vcpu_millis, vm.spec.mem_mib, vm.spec.ephemeral_gib)
    try:
        # The pod's spec as the scheduler builds it, so image pull policy, credentials
        # and secret values come out as they did at placement.
        wanted = await scheduler.microvm_spec(pod, size, vm.spec.labels.get("profile", ""))
        updated = await fleet.update_microvm(vm.id, podupdate.with_images(vm.spec, wanted, names))
    except (environment.ConfigError, pydantic.ValidationError, errors.Conflict, dns.Refused) as exc:
        why = models.invalid(exc) if isinstance(exc, pydantic.ValidationError) else str(exc)
        await recorder.record(
            pod,
            "Failed",
            f"Error: the image of container {', '.join(names)} cannot change: {why}",
            warning=True,
            component="kubelet",
            host=node,
        )
        return None
    for name in names:
        await recorder.record(
            pod,
            "Killing",
            f"Container {name} definition changed, will be restarted",
            component="kubelet",
            host=node,
        )
    return updated
