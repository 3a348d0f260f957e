"""The fleet's ``container`` events as the kubelet's events on the pod.

What happens to a container that its status cannot say (a failed probe: ``Unhealthy``
"Liveness probe failed: HTTP probe failed with statuscode: 500"; a kill for it:
``Killing`` "Container app failed liveness probe, will be restarted") comes from the
fleet as an event of its own, already in the kubelet's words; this records it on the
pod (the microVM's id is the pod's UID), aggregated by the recorder as the kubelet's
(``x3 over 20s``). An event for a pod this provider does not know is dropped.
"""

from __future__ import annotations

from vk_fargate import world
from vk_fargate.fleet import models
from vk_fargate.k8s import events


async def record(recorder: events.Recorder, state: world.World, event: models.Event) -> None:
    detail = event.container_event
    pod = state.pods.get(event.microvm_id or "")
    if detail is None or pod is None:
        return
    await recorder.record(
        pod,
        detail.reason,
        detail.message,
        warning=detail.warning,
        component="kubelet",
        host=(pod.get("spec") or {}).get("nodeName"),
    )
