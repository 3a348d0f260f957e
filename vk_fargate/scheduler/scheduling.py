"""The placer: one pending pod gets its microVM (id = pod UID, so a retry never makes a
second one), then its node, then its binding; the Binding carries the
``CapacityProvisioned`` and ``Logging`` annotations (the API server writes them with
the binding, one request). The microVM's spec is the pure translation's
(``fargate.microvms``) from what ``sources`` reads; the ENI (``enis``) and logging
(``logstate``) decisions are made beside it.

Every step is idempotent, so the pod's reconciler may run this again at any point (a
restart, a retry) and end in the same place. What cannot be placed stays Pending and
unbound with a ``FailedScheduling`` event from fargate-scheduler; what merely cannot
be placed now is retried with back-off, and says so in its ``PodScheduled``
condition, whose age sets the back-off (no count of attempts to keep or lose).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable

import pydantic

from vk_fargate import errors, settings, world
from vk_fargate.fargate import dns as fargate_dns
from vk_fargate.fargate import (
    environment,
    microvms,
    sizing,
    volumes,
)
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fleet import backend, models
from vk_fargate.k8s import events, kube, pods
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.scheduler import enis as enis_module
from vk_fargate.scheduler import logstate, sources, support

log = logging.getLogger(__name__)
SCHEDULER = logstate.SCHEDULER
CAPACITY_ANNOTATION = "CapacityProvisioned"
PROFILE_LABEL = "eks.amazonaws.com/fargate-profile"
RETRY_MIN, RETRY_MAX = 5.0, 300.0  # seconds between placement retries (doubling)
NAME_HELD_RETRY = 2.0  # seconds between looks at a node name another pod's node holds


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Scheduler:
    api: kube.Kube
    fleet: backend.MicroVMs
    recorder: events.Recorder
    world: world.World
    cfg: settings.ProviderSettings
    retry: Callable[[str, float], None]  # re-run the pod's reconcile after a delay
    enis: enis_module.Enis | None = None  # with an AWS backend: an ENI per pod
    aws_backend: bool = False  # whether logs can be shipped to CloudWatch
    # The kubelet port a new node advertises: a port of its own (the kubelet API's).
    node_port: Callable[[str], Awaitable[int]] | None = None
    # Every profile that may take pods (the config file's and the cluster's).
    profiles: Callable[[], list[fargate_profiles.Profile]] = list
    # A namespace's Services, from a watch (not a LIST per pod).
    services: sources.Services = lambda _namespace: []
    # The ServiceAccount tokens of pods' volumes (shared with the volume sync).
    tokens: sources.Tokens = dataclasses.field(default_factory=sources.Tokens)
    # Where pods reach the API server through the kubernetes Service (their service route).
    api_endpoint: sources.ApiEndpoint = dataclasses.field(default_factory=sources.ApiEndpoint)
    # The kubelet's clusterDNS and clusterDomain, as they are now.
    dns_cluster: Callable[[], fargate_dns.Cluster] = fargate_dns.Cluster
    # Told of each microVM spec the fleet took (the volume sync's starting point).
    placed: Callable[[str, models.MicroVMSpec], None] = lambda _uid, _spec: None

    async def place(self, pod: kube.JSON) -> None:
        uid = pod["metadata"]["uid"]
        if (pod.get("spec") or {}).get("schedulingGates"):
            return  # as kube-scheduler: not yet (the API server says SchedulingGated)
        refused = support.refusal(pod.get("spec") or {})
        if refused is not None:
            await self._refuse(pod, refused)
            return
        try:
            size = sizing.size(pod.get("spec") or {})
        except (sizing.TooLarge, ValueError) as exc:
            await self._refuse(pod, f"Pod not supported on Fargate: {exc}")
            return
        vm = self.world.vms.get(uid)
        if vm is None:
            profile = fargate_profiles.claimed(self.profiles(), pod, pod["metadata"]["namespace"])
            if isinstance(profile, str):
                await self._refuse(pod, f"Pod not supported on Fargate: {profile}")
                return
            if profile.status == "FAILED":
                await self._refuse(
                    pod,
                    enis_module.misconfigured(
                        profile.name, profile.message or "the profile is FAILED"
                    ),
                )
                return
            if profile.vpc_dns_problem and fargate_profiles.cluster_dns(pod):
                # The seed's case: CoreDNS stays Pending while its VPC has no DNS.
                message = f"CoreDNS cannot run on Fargate here: {profile.vpc_dns_problem}"
                await self.recorder.record(
                    pod, "FailedScheduling", message, warning=True, component=SCHEDULER
                )
                await self._later(pod, message)
                return
            vm = await self._create_microvm(pod, size, profile)
            if vm is None:
                return
            self.world.vms.setdefault(uid, vm)  # read our writes: the stream may lag
        ip = vm.status.private_ip
        if not ip:
            raise errors.VkFargateError(f"microVM {uid} has no address")
        node = await self.ensure_node(pod, vm, size)
        if node is None:
            return  # retried once the name is free
        await support.warn(self.recorder, pod, component=SCHEDULER)
        logging_state = await logstate.decide(
            self.api, self.recorder, pod, aws_backend=self.aws_backend
        )
        # A pod that reached us without the webhook gets the label it would have set.
        profile_name = vm.spec.labels.get("profile")
        if profile_name and PROFILE_LABEL not in (pod["metadata"].get("labels") or {}):
            self.world.pod_cache.wrote(
                await pods.label(self.api, pod, {PROFILE_LABEL: profile_name})
            )
        annotations = {
            CAPACITY_ANNOTATION: size.capacity_provisioned,
            logstate.ANNOTATION: logging_state,
        }
        try:
            await pods.bind(self.api, pod, node, annotations)
        except errors.KubeError as exc:
            if not exc.conflict:
                raise
            return  # already bound: the pod's next version says so
        meta = pod["metadata"]
        await self.recorder.record(
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
            component=SCHEDULER,
        )

    async def ensure_node(
        self, pod: kube.JSON, vm: models.MicroVM, size: sizing.Size
    ) -> str | None:
        """The pod's node, registered (with its lease) if it is not already.

        The name comes from the microVM's address, which may have been another pod's
        a moment ago. While that pod's node still exists it is never adopted (its
        cleanup would delete it from under this pod): None, and the pod is retried
        when the name is free.
        """
        uid = pod["metadata"]["uid"]
        ip = vm.status.private_ip or ""
        name = fargate_nodes.node_name(ip, self.cfg.region)
        known = self.world.nodes.get(name)
        if known is not None:
            holder = world.pod_of(known)
            if holder == uid:
                return name
            self._name_held(uid, name, holder)
            return None
        meta = pod["metadata"]
        placement = fargate_nodes.Placement(
            pod_uid=uid,
            pod=f"{meta['namespace']}/{meta['name']}",
            ip=ip,
            zone=vm.status.zone or "",
            region=self.cfg.region,
            cluster=self.cfg.cluster_name,
            size=size,
            kubelet_host=self.cfg.kubelet_advertise_address,
            kubelet_port=await self.node_port(name) if self.node_port else self.cfg.kubelet_port,
        )
        created = await k8s_nodes.create(self.api, fargate_nodes.node(placement, now()))
        self.world.node_cache.wrote(created)  # read your writes
        holder = world.pod_of(created)
        if holder != uid:
            self._name_held(uid, name, holder)
            return None
        await k8s_nodes.create_lease(self.api, created, holder=name)
        return name

    def _name_held(self, uid: str, name: str, holder: str | None) -> None:
        """Wait for node ``name`` of pod ``holder`` to go; look again at its cleanup."""
        log.info("node %s still serves pod %s; pod %s waits for the name", name, holder, uid)
        self.world.name_waiters.setdefault(name, set()).add(uid)
        if holder:
            self.retry(holder, 0.0)
        self.retry(uid, NAME_HELD_RETRY)

    def name_freed(self, name: str) -> None:
        """Node ``name`` is gone: the pods waiting for the name go on at once."""
        for uid in self.world.name_waiters.pop(name, set()):
            self.retry(uid, 0.0)

    async def microvm_spec(
        self, pod: kube.JSON, size: sizing.Size, profile: str
    ) -> models.MicroVMSpec:
        """The microVM spec pod ``pod`` asks for now (its placement aside: no ENI
        address); the pod reconciler builds a running pod's changed spec with it too.
        A volume whose source is missing is pending in it (the volume sync says why
        and puts its files once they are there)."""
        fetch = sources.memo(self.api)  # an object both read is read once
        env = await sources.environment_sources(
            self.api,
            pod,
            size,
            services=self.services,
            region=self.cfg.region,
            fetch=fetch,
            api_endpoint=await self.api_endpoint.get(self.api),
        )
        mounted = volumes.resolve(
            pod, await sources.volume_sources(self.api, pod, size, self.tokens, fetch=fetch)
        )
        return microvms.spec(
            pod,
            size=size,
            profile=profile,
            cluster=self.cfg.cluster_name,
            sources=env,
            pull_secrets=await sources.pull_secrets(self.api, self.recorder, pod),
            names=fargate_dns.names(pod, self.dns_cluster()),
            mounted=mounted,
        )

    async def _create_microvm(
        self, pod: kube.JSON, size: sizing.Size, profile: fargate_profiles.Profile
    ) -> models.MicroVM | None:
        uid = pod["metadata"]["uid"]
        meta = pod["metadata"]
        try:
            spec = await self.microvm_spec(pod, size, profile.name)
            spec = await enis_module.assign(self.enis, pod, spec, profile)
        except (enis_module.Misconfigured, fargate_dns.Refused) as exc:
            await self._refuse(pod, str(exc))
            return None
        except pydantic.ValidationError as exc:  # a pod the fleet API cannot carry
            await self._refuse(pod, f"Pod not supported on Fargate: {models.invalid(exc)}")
            return None
        except environment.ConfigError as exc:
            await self.recorder.record(
                pod, "Failed", f"Error: {exc}", warning=True, component="kubelet"
            )
            await self._later(pod, str(exc), waiting=("CreateContainerConfigError", str(exc)))
            return None
        for reason, message in fargate_dns.names(pod, self.dns_cluster()).warnings:
            await self.recorder.record(pod, reason, message, warning=True, component="kubelet")
        try:
            vm = await self.fleet.put_microvm(uid, spec)
            self.placed(uid, spec)
            return vm
        except errors.Conflict:
            return await self.fleet.get_microvm(uid)  # ours already, from an earlier spec
        except errors.InsufficientCapacity as exc:
            pod_name = f"{meta['namespace']}/{meta['name']}"
            message = f"Pod provisioning timed out (will retry) for pod: {pod_name}"
            await self.recorder.record(
                pod, "FailedScheduling", message, warning=True, component=SCHEDULER
            )
            await self._later(pod, message, minimum=exc.retry_after)
            return None
        except errors.InvalidSpec as exc:
            await self._refuse(pod, f"Pod not supported on Fargate: {exc.message}")
            return None

    async def _later(
        self,
        pod: kube.JSON,
        message: str,
        *,
        minimum: float = 0.0,
        waiting: tuple[str, str] | None = None,
    ) -> None:
        """Try the pod again later. It says why in its PodScheduled condition, False
        since it began to wait; the back-off is as long as it has waited (5 s, 5, 10,
        20, ... up to 5 min: doubling), read from that condition, so a restart or a new
        leader goes on where it was. ``waiting`` is its containers' (reason, message)."""
        scheduled = _condition(pod, "PodScheduled")
        since = scheduled.get("lastTransitionTime") if scheduled.get("status") == "False" else None
        waited = (models.now() - _moment(since)).total_seconds() if since else 0.0
        condition = _unschedulable(message, since or now())
        status: kube.JSON = {}
        if {k: scheduled.get(k) for k in condition} != condition:
            status["conditions"] = [condition]
        if waiting is not None:
            status["containerStatuses"] = _waiting(pod, *waiting)
        if status:
            self.world.pod_cache.wrote(await pods.patch_status(self.api, pod, status))
        self.retry(pod["metadata"]["uid"], max(minimum, min(max(waited, RETRY_MIN), RETRY_MAX)))

    async def _refuse(self, pod: kube.JSON, message: str) -> None:
        """Leave the pod Pending and unbound, saying why (once: a repeat changes nothing)."""
        scheduled = _condition(pod, "PodScheduled")
        if scheduled.get("reason") == "Unschedulable" and scheduled.get("message") == message:
            return
        condition = _unschedulable(message, now())
        self.world.pod_cache.wrote(
            await pods.patch_status(self.api, pod, {"conditions": [condition]})
        )
        await self.recorder.record(
            pod, "FailedScheduling", message, warning=True, component=SCHEDULER
        )


def _condition(pod: kube.JSON, kind: str) -> kube.JSON:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _unschedulable(message: str, since: str) -> kube.JSON:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": since,
    }


def _moment(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _waiting(pod: kube.JSON, reason: str, message: str) -> list[kube.JSON]:
    """Container statuses saying every container waits for ``reason``."""
    return [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }
        for c in (pod.get("spec") or {}).get("containers") or []
    ]
