"""The pod reconciler: for one pod UID, make the cluster and the fleet agree.

Level-triggered: it reads the pod, its microVM and its node from the world and does
the next step, whatever happened before (a restart, a lost event, a retry):

- no pod: stop and forget its microVM, then remove its node and lease;
- pod deleting: stop the microVM with the pod's grace period; once the fleet has
  forgotten it, delete the pod (grace 0, UID precondition), its node and its lease;
- pod unbound: the scheduler places it;
- pod bound, microVM known: re-register a missing node; patch the pod's status when
  it changed; record events for what changed (Started, BackOff, Killing, ...); and
  UpdatePod (``controllers.updates``): a changed image goes to the fleet as an update
  of the microVM, a passed ``activeDeadlineSeconds`` fails the pod and stops its
  microVM, a resize to another Fargate size is refused (``PodResizePending``);
- pod bound, microVM gone: the pod Failed with reason ``NotFound``.

A node is removed only as the node made for that pod (its annotation, then a UID
precondition): its name, taken from an address, may already be a successor's.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

from vk_fargate import errors, metrics, world
from vk_fargate.controllers import podstatus, updates
from vk_fargate.fargate import podupdate, sizing
from vk_fargate.fleet import backend, models
from vk_fargate.k8s import events, kube, pods
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.scheduler import scheduling

log = logging.getLogger(__name__)
# A container that cannot get its image: the kubelet's first event (reason, text), then
# "Error: <waiting reason>".
IMAGE_FAILURES = {
    "ErrImagePull": ("Failed", 'Failed to pull image "{image}": {message}'),
    "ErrImageNeverPull": ("ErrImageNeverPull", "{message}"),
    "InvalidImageName": ("InspectFailed", "{message}"),
    "ImagePullBackOff": ("BackOff", 'Back-off pulling image "{image}"'),
}

CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError")


def go_duration(seconds: float) -> str:
    """A duration as Go prints one truncated to milliseconds: 523ms, 1.2s, 2m3.004s."""
    millis = int(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


@dataclasses.dataclass
class PodReconciler:
    api: kube.Kube
    fleet: backend.MicroVMs
    recorder: events.Recorder
    world: world.World
    scheduler: scheduling.Scheduler

    async def reconcile(self, uid: str) -> None:
        pod = self.world.pods.get(uid)
        vm = self.world.vms.get(uid)
        if pod is None:
            await self._orphan(uid, vm)
        elif pod["metadata"].get("deletionTimestamp"):
            await self._deleting(pod, vm)
        elif not (pod.get("spec") or {}).get("nodeName"):
            await self.scheduler.place(pod)
        elif vm is None:
            await self._vanished(pod)
        else:
            await self._sync(pod, vm)

    async def _orphan(self, uid: str, vm: models.MicroVM | None) -> None:
        if vm is not None and not await self._stop(uid, grace=0):
            return
        await self._remove_node(uid)
        await self._release_eni(uid)

    async def _release_eni(self, uid: str) -> None:
        if self.scheduler.enis is not None:
            await self.scheduler.enis.release(uid)

    async def _deleting(self, pod: kube.JSON, vm: models.MicroVM | None) -> None:
        uid = pod["metadata"]["uid"]
        if vm is not None:
            # Asked again once it has ended: a fleet that lost the request (a restart
            # of an older fleetd) would otherwise keep it, and the pod Terminating.
            if vm.status.state == "stopping":
                return  # asked already (the fleet's answer says so): its end is an event
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            node = (pod.get("spec") or {}).get("nodeName")
            for c in vm.status.containers:
                if c.state == "running":
                    await self.recorder.record(
                        pod,
                        "Killing",
                        f"Stopping container {c.name}",
                        component="kubelet",
                        host=node,
                    )
            if not await self._stop(uid, grace=grace):
                return
        try:
            await pods.delete_now(self.api, pod)
        except errors.KubeError as exc:
            if not (exc.not_found or exc.conflict):
                raise
        await self._remove_node(uid)
        await self._release_eni(uid)

    async def _stop(self, uid: str, *, grace: int | None) -> bool:
        """Ask the fleet to stop the microVM; True when it is gone already (the answer
        to an earlier DELETE was lost, say). It leaves the cache then, so the fleet's
        ``deleted`` event, if still to come, enqueues nothing: the caller goes on. Else
        the fleet's answer (``stopping``) goes into the cache: read your writes."""
        try:
            answer = await self.fleet.delete_microvm(uid, grace_seconds=grace)
        except errors.NotFound:
            self.world.vms.pop(uid, None)
            return True
        self.world.wrote_vm(answer)
        return False

    async def _remove_node(self, uid: str) -> None:
        """Delete the node made for pod ``uid``, and only that one (by UID)."""
        node = self.world.nodes_by_pod.get(uid)
        if node is None:
            return
        await k8s_nodes.delete(self.api, node)
        self.world.node_cache.remove(node)
        self.scheduler.name_freed(node["metadata"]["name"])

    async def _vanished(self, pod: kube.JSON) -> None:
        """A bound pod whose microVM the cache lacks: Failed (final, as for a lost node)
        only once the fleet itself says the microVM is gone; the cache may be behind
        (a reconnecting event stream), and a Failed pod never runs again."""
        if not self.world.fleet_synced.is_set():
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        uid = pod["metadata"]["uid"]
        try:
            vm = await self.fleet.get_microvm(uid)
        except errors.NotFound:
            pass
        else:
            self.world.vms.setdefault(uid, vm)
            await self._sync(pod, self.world.vms[uid])
            return
        status = {
            "phase": "Failed",
            "reason": "NotFound",
            "message": "the pod's microVM is gone from the fleet",
        }
        self.world.pod_cache.wrote(await pods.patch_status(self.api, pod, status))
        await self.recorder.record(
            pod,
            "NotFound",
            status["message"],
            warning=True,
            component="kubelet",
            host=pod["spec"]["nodeName"],
        )

    async def _sync(self, pod: kube.JSON, vm: models.MicroVM) -> None:
        uid = pod["metadata"]["uid"]
        if uid not in self.world.nodes_by_pod and vm.status.private_ip:
            try:
                size = sizing.size(pod.get("spec") or {})
            except (sizing.TooLarge, ValueError):
                size = sizing.Size(vm.spec.vcpu_millis, vm.spec.mem_mib, vm.spec.ephemeral_gib)
            await self.scheduler.ensure_node(pod, vm, size)
        current = pod.get("status") or {}  # as the API server has it (and our writes)
        spec = pod.get("spec") or {}
        failed = None
        if updates.past_deadline(pod, current, self.scheduler.retry):
            failed = (podupdate.DEADLINE_REASON, podupdate.DEADLINE_MESSAGE)
            await updates.kill(self.fleet, self.recorder, pod, vm, current)
        else:
            updated = await updates.update(self.fleet, self.recorder, self.scheduler, pod, vm)
            if updated is not None:
                self.world.wrote_vm(updated)  # read our writes: the stream may lag
                vm = self.world.vms.get(uid, updated)
        refused = None if failed else podupdate.resize_refusal(spec, vm.spec)
        status = podstatus.compute(
            pod,
            vm,
            previous=current.get("conditions"),
            resize_pending=refused,
            failed=failed,
            resources=podupdate.allocated(spec, current, refused=bool(refused)),
        )
        if refused and not any(
            c.get("type") == podupdate.RESIZE_CONDITION and c.get("message") == refused
            for c in current.get("conditions") or []
        ):
            await self.recorder.record(
                pod,
                "ResizeInfeasible",
                f"Pod resize Infeasible: {refused}",
                warning=True,
                component="kubelet",
                host=spec.get("nodeName"),
            )
        before = current.get("phase")
        if status["phase"] == "Running" and before not in ("Running", "Succeeded", "Failed"):
            created = pod["metadata"].get("creationTimestamp")
            if created:
                began = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
                metrics.SCHEDULING_LATENCY.observe((models.now() - began).total_seconds())
        if not podstatus.agrees(current, status):
            self.world.pod_cache.wrote(await pods.patch_status(self.api, pod, status))
        await self._events(pod, vm, current, status)
        await self._ephemeral_events(pod, current, status)

    async def _pulled(
        self,
        pod: kube.JSON,
        c: models.ContainerStatus,
        image: str,
        node: str | None,
    ) -> None:
        """The kubelet's pull events for a container that started: Pulling and Pulled with
        time and size after a real pull (its first start, or a new image in place), else
        already present (a crash restart pulls nothing); none when the fleet did not say
        (nothing to report is better than a made-up line)."""
        pulled = c.pulled
        if pulled is None:
            return
        if pulled.present or (c.restart_count > 0 and not _pulled_since_last_start(c)):
            await self.recorder.record(
                pod,
                "Pulled",
                f'Container image "{image}" already present on machine',
                component="kubelet",
                host=node,
            )
            return
        took = go_duration(pulled.seconds)
        await self.recorder.record(
            pod, "Pulling", f'Pulling image "{image}"', component="kubelet", host=node
        )
        await self.recorder.record(
            pod,
            "Pulled",
            f'Successfully pulled image "{image}" in {took} ({took} including waiting). '
            f"Image size: {pulled.size} bytes.",
            component="kubelet",
            host=node,
        )

    async def _ephemeral_events(
        self, pod: kube.JSON, current: kube.JSON, status: kube.JSON
    ) -> None:
        """A warning for each ephemeral container the status newly reports refused."""
        known = {c.get("name") for c in current.get("ephemeralContainerStatuses") or []}
        for c in status.get("ephemeralContainerStatuses") or []:
            if c["name"] not in known:
                await self.recorder.record(
                    pod,
                    "Failed",
                    f"Error: ephemeral container {c['name']}: {podstatus.EPHEMERAL_REFUSAL}",
                    warning=True,
                    component="kubelet",
                    host=(pod.get("spec") or {}).get("nodeName"),
                )

    async def _events(
        self,
        pod: kube.JSON,
        vm: models.MicroVM,
        current: kube.JSON,
        status: kube.JSON,
    ) -> None:
        """The events of what the pod's status says now (``status``), not what the API
        server has (``current``)."""
        before, after = podstatus.reported(current), podstatus.reported(status)
        node = (pod.get("spec") or {}).get("nodeName")
        images = {
            c["name"]: c.get("image", "")
            for c in [
                *(pod["spec"].get("initContainers") or []),
                *(pod["spec"].get("containers") or []),
            ]
        }
        for c in [*vm.status.init_containers, *vm.status.containers]:
            if after.get(c.name) == before.get(c.name):
                continue
            if c.state == "running":
                await self._pulled(pod, c, images.get(c.name, ""), node)
                await self.recorder.record(
                    pod, "Created", f"Created container: {c.name}", component="kubelet", host=node
                )
                await self.recorder.record(
                    pod, "Started", f"Started container {c.name}", component="kubelet", host=node
                )
            elif c.state == "waiting" and c.reason == "CrashLoopBackOff":
                await self.recorder.record(
                    pod,
                    "BackOff",
                    f"Back-off restarting failed container {c.name} in pod "
                    f"{pod['metadata']['name']}",
                    warning=True,
                    component="kubelet",
                    host=node,
                )
            elif c.state == "waiting" and c.reason in CONFIG_FAILURES:
                await self.recorder.record(
                    pod,
                    "Failed",
                    f"Error: {c.message}",
                    warning=True,
                    component="kubelet",
                    host=node,
                )
            elif c.state == "waiting" and c.reason in IMAGE_FAILURES:
                first, text = IMAGE_FAILURES[c.reason]
                image = images.get(c.name, "")
                message = text.format(image=image, message=c.message or "")
                for reason, said in ((first, message), ("Failed", f"Error: {c.reason}")):
                    await self.recorder.record(
                        pod, reason, said, warning=True, component="kubelet", host=node
                    )
        if vm.status.state == "failed" and after.get("") != before.get(""):
            await self.recorder.record(
                pod,
                "ProviderFailed",
                f"{vm.status.reason}: {vm.status.message}",
                warning=True,
                component="kubelet",
                host=node,
            )


def _pulled_since_last_start(c: models.ContainerStatus) -> bool:
    """Whether the container's image was made ready after its last instance started:
    for this start (its image changed in place), not a restart of the one that ran."""
    last = c.last_termination.started_at if c.last_termination else None
    at = c.pulled.at if c.pulled else None
    return at is not None and last is not None and at >= last
