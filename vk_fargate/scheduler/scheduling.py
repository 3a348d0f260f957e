"""Placing one pending pod: size it, resolve its environment, ask the fleet for its
microVM (id = pod UID, so a retry never makes a second one), register its node,
and bind it; the Binding carries the ``CapacityProvisioned`` and ``Logging``
annotations (the API server writes them with the binding, one request).

Every step is idempotent, so the pod's reconciler may run this again at any point (a
restart, a retry) and end in the same place. What cannot be placed stays Pending and
unbound with a ``FailedScheduling`` event from fargate-scheduler; what merely does
not fit now is retried with back-off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable

import pydantic

from vk_fargate import errors, settings
from vk_fargate.aws import logconfig, logfilter
from vk_fargate.fargate import environment, pullsecrets, security, sizing, validation
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fleet import backend, models
from vk_fargate.k8s import events, kube, pods
from vk_fargate.k8s import nodes as k8s_nodes
from vk_fargate.scheduler import enis as enis_module
from vk_fargate.scheduler import world

log = logging.getLogger(__name__)
SCHEDULER = "fargate-scheduler"
CAPACITY_ANNOTATION = "CapacityProvisioned"
PROFILE_LABEL = "eks.amazonaws.com/fargate-profile"
LOGGING_ANNOTATION = "Logging"
LOGGING_NAMESPACE, LOGGING_CONFIG_MAP = logconfig.NAMESPACE, logconfig.CONFIG_MAP
CLUSTER_LABEL = fargate_nodes.CLUSTER_LABEL
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
    attempts: dict[str, int] = dataclasses.field(default_factory=dict)
    enis: enis_module.Enis | None = None  # with an AWS backend: an ENI per pod
    aws_backend: bool = False  # whether logs can be shipped to CloudWatch
    # The kubelet port a new node advertises: a port of its own (the kubelet API's).
    node_port: Callable[[str], Awaitable[int]] | None = None
    # Every profile that may take pods (the config file's and the cluster's).
    profiles: Callable[[], list[fargate_profiles.Profile]] = list
    # A namespace's Services, from a watch (not a LIST per pod).
    services: Callable[[str], list[kube.JSON]] = lambda _namespace: []

    async def place(self, pod: kube.JSON) -> None:
        uid = pod["metadata"]["uid"]
        refused = validation.refusal(pod.get("spec") or {})
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
        ignored = security.not_applied(pod.get("spec") or {})
        if ignored:
            await self.recorder.record(
                pod,
                "SecurityContextNotApplied",
                "vk-fargate does not apply these securityContext fields yet; the pod runs "
                f"without them: {', '.join(ignored)}",
                warning=True,
                component=SCHEDULER,
            )
        logging_state = await self._logging(pod)
        # A pod that reached us without the webhook gets the label it would have set.
        profile_name = vm.spec.labels.get("profile")
        if profile_name and PROFILE_LABEL not in (pod["metadata"].get("labels") or {}):
            await pods.label(self.api, pod, {PROFILE_LABEL: profile_name})
        annotations = {
            CAPACITY_ANNOTATION: size.capacity_provisioned,
            LOGGING_ANNOTATION: logging_state,
        }
        try:
            await pods.bind(self.api, pod, node, annotations)
        except errors.KubeError as exc:
            if not exc.conflict:
                raise
            return  # already bound: the pod's next version says so
        self.attempts.pop(uid, None)
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
        self.world.set_node(created)
        holder = world.pod_of(created)
        if holder != uid:
            self._name_held(uid, name, holder)
            return None
        await k8s_nodes.renew_lease(self.api, created, holder=name)
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

    async def _create_microvm(
        self, pod: kube.JSON, size: sizing.Size, profile: fargate_profiles.Profile
    ) -> models.MicroVM | None:
        uid = pod["metadata"]["uid"]
        meta = pod["metadata"]
        try:
            spec = await self.microvm_spec(pod, size, profile.name)
            spec = await self._with_eni(pod, spec, profile)
        except enis_module.Misconfigured as exc:
            await self._refuse(pod, str(exc))
            return None
        except pydantic.ValidationError as exc:  # a pod the fleet API cannot carry
            await self._refuse(pod, f"Pod not supported on Fargate: {models.invalid(exc)}")
            return None
        except environment.ConfigError as exc:
            await self.recorder.record(
                pod, "Failed", f"Error: {exc}", warning=True, component="kubelet"
            )
            await self._waiting(pod, "CreateContainerConfigError", str(exc))
            self._later(uid)
            return None
        try:
            return await self.fleet.put_microvm(uid, spec)
        except errors.Conflict:
            return await self.fleet.get_microvm(uid)  # ours already, from an earlier spec
        except errors.InsufficientCapacity as exc:
            await self.recorder.record(
                pod,
                "FailedScheduling",
                "Pod provisioning timed out (will retry) for pod: "
                f"{meta['namespace']}/{meta['name']}",
                warning=True,
                component=SCHEDULER,
            )
            self._later(uid, minimum=exc.retry_after)
            return None
        except errors.InvalidSpec as exc:
            await self._refuse(pod, f"Pod not supported on Fargate: {exc.message}")
            return None

    async def _with_eni(
        self, pod: kube.JSON, spec: models.MicroVMSpec, profile: fargate_profiles.Profile
    ) -> models.MicroVMSpec:
        """The spec with the address of the pod's ENI, when its profile names subnets."""
        meta = pod["metadata"]
        if self.enis is None or not profile.subnets:
            return spec
        address = await self.enis.address(
            profile, namespace=meta["namespace"], pod=meta["name"], uid=meta["uid"]
        )
        return spec.model_copy(
            update={"private_ip": address.private_ip, "subnet": address.subnet_id}
        )

    async def _logging(self, pod: kube.JSON) -> str:
        """EKS's Logging annotation, and an event saying why when logs will not be shipped.

        ``LoggingEnabled`` only when the pod's lines will really reach CloudWatch: the
        ``aws-observability/aws-logging`` ConfigMap exists, is valid, has a CloudWatch
        output, and an AWS backend is configured (the log router ships them).
        """
        try:
            found = await pods.config_map(self.api, LOGGING_NAMESPACE, LOGGING_CONFIG_MAP)
        except errors.KubeError as exc:
            if not exc.not_found:
                raise
            return await self._logging_disabled(pod, "LOGGING_CONFIGMAP_NOT_FOUND", "")
        try:
            config = logconfig.parse(found.get("data") or {})
        except errors.LoggingConfigInvalid as exc:
            return await self._logging_disabled(pod, "LOGGING_CONFIGMAP_INVALID", str(exc))
        if not config.outputs:
            return await self._logging_disabled(
                pod,
                "NO_CLOUDWATCH_OUTPUT",
                "vk-fargate ships to cloudwatch/cloudwatch_logs outputs only; not shipped: "
                + ", ".join(config.unshipped_outputs),
            )
        if not self.aws_backend:
            return await self._logging_disabled(
                pod,
                "AWS_BACKEND_DISABLED",
                "the aws-logging ConfigMap is valid but the provider has no AWS backend "
                "(set VK_FARGATE_AWS_ENABLED=true)",
            )
        ignored = logfilter.not_applied(config.parsed_filters)
        if ignored:
            await self.recorder.record(
                pod,
                "LoggingFiltersNotApplied",
                "vk-fargate applies grep filters on the log key only; lines pass these "
                f"filters.conf filters unfiltered: {', '.join(ignored)}",
                warning=True,
                component=SCHEDULER,
            )
        return "LoggingEnabled"

    async def _logging_disabled(self, pod: kube.JSON, code: str, detail: str) -> str:
        await self.recorder.record(
            pod,
            "LoggingDisabled",
            f"{code}: {detail}" if detail else code,
            warning=True,
            component=SCHEDULER,
        )
        return f"LoggingDisabled: {code}"

    def _later(self, uid: str, *, minimum: float = 0.0) -> None:
        tries = self.attempts.get(uid, 0) + 1
        self.attempts[uid] = tries
        self.retry(uid, max(minimum, min(RETRY_MIN * 2 ** (tries - 1), RETRY_MAX)))

    async def _refuse(self, pod: kube.JSON, message: str) -> None:
        """Leave the pod Pending and unbound, saying why (once: a repeat changes nothing)."""
        current = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
        scheduled = current.get("PodScheduled") or {}
        if scheduled.get("reason") == "Unschedulable" and scheduled.get("message") == message:
            return
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now(),
        }
        await pods.patch_status(self.api, pod, {"conditions": [condition]})
        await self.recorder.record(
            pod, "FailedScheduling", message, warning=True, component=SCHEDULER
        )

    async def _waiting(self, pod: kube.JSON, reason: str, message: str) -> None:
        statuses = [
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
        await pods.patch_status(self.api, pod, {"containerStatuses": statuses})

    async def _sources(self, pod: kube.JSON, size: sizing.Size) -> environment.Sources:
        namespace = pod["metadata"]["namespace"]
        spec = pod.get("spec") or {}
        wanted: dict[str, set[str]] = {"configMap": set(), "secret": set()}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            for source in c.get("envFrom") or []:
                if "configMapRef" in source:
                    wanted["configMap"].add(source["configMapRef"]["name"])
                if "secretRef" in source:
                    wanted["secret"].add(source["secretRef"]["name"])
            for var in c.get("env") or []:
                value_from = var.get("valueFrom") or {}
                if "configMapKeyRef" in value_from:
                    wanted["configMap"].add(value_from["configMapKeyRef"]["name"])
                if "secretKeyRef" in value_from:
                    wanted["secret"].add(value_from["secretKeyRef"]["name"])

        async def fetch(kind: str, name: str) -> tuple[str, kube.JSON | None]:
            try:
                if kind == "configMap":
                    return name, await pods.config_map(self.api, namespace, name)
                return name, await pods.secret(self.api, namespace, name)
            except errors.KubeError as exc:
                if exc.not_found:
                    return name, None
                raise

        maps = dict(await asyncio.gather(*(fetch("configMap", n) for n in wanted["configMap"])))
        secrets = dict(await asyncio.gather(*(fetch("secret", n) for n in wanted["secret"])))
        services = self.services(namespace) if spec.get("enableServiceLinks", True) else []
        master = [s for s in self.services("default") if s["metadata"]["name"] == "kubernetes"]
        return environment.Sources(
            config_maps=maps,
            secrets=secrets,
            services=services,
            master_services=master,
            node_name_template=fargate_nodes.node_name("{private_ip}", self.cfg.region).replace(
                "{private_ip}", "{private_ip_dashed}"
            ),
            size=size,
        )

    async def _pull_secrets(self, pod: kube.JSON) -> list[kube.JSON]:
        """The pod's image pull secrets (the ServiceAccount's were copied in by its
        admission plugin); those missing are named in the kubelet's warning."""
        namespace = pod["metadata"]["namespace"]
        found, missing = [], []
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            try:
                found.append(await pods.secret(self.api, namespace, ref.get("name", "")))
            except errors.KubeError as exc:
                if not exc.not_found:
                    raise
                missing.append(ref.get("name", ""))
        if missing:
            await self.recorder.record(
                pod,
                "FailedToRetrieveImagePullSecret",
                f"Unable to retrieve some image pull secrets ({', '.join(missing)}); "
                "attempting to pull the image may not succeed.",
                warning=True,
                component="kubelet",
            )
        return found

    async def microvm_spec(
        self, pod: kube.JSON, size: sizing.Size, profile: str
    ) -> models.MicroVMSpec:
        """The microVM spec pod ``pod`` asks for now (its placement aside: no ENI
        address); the pod reconciler builds a running pod's changed spec with it too."""
        spec = pod.get("spec") or {}
        meta = pod["metadata"]
        sources = await self._sources(pod, size)
        pull_secrets = await self._pull_secrets(pod)

        def container(c: kube.JSON) -> models.Container:
            return models.Container(
                name=c["name"],
                image=c.get("image") or "",
                command=c.get("command") or [],  # $(VAR)s: the fleet expands them
                args=c.get("args") or [],
                env=environment.resolve(pod, c, sources),
                working_dir=c.get("workingDir"),
                image_pull_policy=c.get("imagePullPolicy"),
                security=_security(spec, c),
                pull_credentials=pullsecrets.credentials(c.get("image") or "", pull_secrets),
            )

        def containers(items: list[kube.JSON]) -> list[models.Container]:
            return [container(c) for c in items]

        owners = meta.get("ownerReferences") or []
        # Sidecars (init containers with restartPolicy Always) run beside the app
        # containers for the pod's whole life, so the fleet runs them as app containers.
        return models.MicroVMSpec(
            vcpu_millis=size.vcpu_millis,
            mem_mib=size.mem_mib,
            ephemeral_gib=size.ephemeral_gib,
            labels={
                CLUSTER_LABEL: self.cfg.cluster_name,
                "namespace": meta["namespace"],
                "pod": meta["name"],
                "profile": profile,
            },
            init_containers=containers(
                [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") != "Always"]
            ),
            containers=containers(
                [
                    *(
                        c
                        for c in spec.get("initContainers") or []
                        if c.get("restartPolicy") == "Always"
                    ),
                    *(spec.get("containers") or []),
                ]
            ),
            restart_policy=spec.get("restartPolicy", "Always"),
            termination_grace_seconds=min(int(spec.get("terminationGracePeriodSeconds", 30)), 3600),
            spread_group=owners[0]["uid"] if owners else None,
        )


def _security(spec: kube.JSON, container: kube.JSON) -> models.SecurityContext | None:
    fields = security.effective(spec, container)
    return None if fields is None else models.SecurityContext.model_validate(fields)
