"""The fleet's side of the world: list this cluster's microVMs, then follow the event
stream from the list's cursor, so no change is missed; relist when the cursor has
expired or the fleet was unreachable. Every change enqueues the pod (same UID), and
every list enqueues the pods still waiting for a microVM: one waiting to try again
later (no room on the fleet) tries at once; one whose placement failed (the fleet
unreachable) keeps its back-off, at most ``VK_FARGATE_RETRY_MAX_SECONDS``.
A container's own events (a failed probe, a kill for it) go to ``on_container_event``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vk_fargate import errors, metrics, supervision, world
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import backend, models

log = logging.getLogger(__name__)
BACKOFF_MIN, BACKOFF_MAX = 0.5, 15.0


def _account(vm: models.MicroVM) -> None:
    """Add a finished microVM's provisioned vCPU- and GB-seconds to the metrics."""
    start = vm.status.started_at or vm.status.created_at
    seconds = max(0.0, ((vm.status.finished_at or models.now()) - start).total_seconds())
    labels = (vm.spec.labels.get("namespace", ""), vm.spec.labels.get("profile", ""))
    metrics.PROVISIONED_VCPU_SECONDS.labels(*labels).inc(seconds * vm.spec.vcpu_millis / 1000)
    metrics.PROVISIONED_GB_SECONDS.labels(*labels).inc(seconds * vm.spec.mem_mib / 1024)


async def run(
    fleet: backend.MicroVMs,
    state: world.World,
    enqueue: Callable[[str], None],
    *,
    cluster: str,
    on_notice: Callable[[models.Event], None] | None = None,
    on_container_event: Callable[[models.Event], Awaitable[None]] | None = None,
) -> None:
    """Follow the fleet forever (returns only when cancelled)."""
    labels = {fargate_nodes.CLUSTER_LABEL: cluster}
    backoff = supervision.Backoff(BACKOFF_MIN, BACKOFF_MAX)
    while True:
        try:
            listed = await fleet.list_microvms(labels)
            fresh = {vm.id: vm for vm in listed.items}
            for gone in set(state.vms) - set(fresh):
                del state.vms[gone]
                enqueue(gone)
            for vm in fresh.values():
                state.vms[vm.id] = vm
                enqueue(vm.id)
            # Pods still to place, waiting while the fleet was away: now, or after a back-off.
            for uid, pod in list(state.pods.items()):
                if uid not in fresh and not (pod.get("spec") or {}).get("nodeName"):
                    enqueue(uid)
            state.fleet_synced.set()
            backoff.reset()
            async for event in fleet.events(listed.cursor):
                changed = event.microvm
                if event.type == "microvm" and changed is not None:
                    if changed.spec.labels.get(fargate_nodes.CLUSTER_LABEL) == cluster:
                        state.vms[changed.id] = changed
                        enqueue(changed.id)
                elif event.type == "deleted" and event.microvm_id in state.vms:
                    _account(state.vms.pop(event.microvm_id))
                    enqueue(event.microvm_id)
                elif event.type == "maintenance" and on_notice is not None:
                    on_notice(event)
                elif event.type == "container" and on_container_event is not None:
                    await on_container_event(event)
        except errors.CursorExpired:
            log.info("fleet event cursor expired; listing again")
        except errors.FleetError as exc:
            delay = backoff.next()
            log.warning("fleet unreachable (%s); listing again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
