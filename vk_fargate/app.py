"""Wiring of ``vk-fargate run``: the watches, the reconcilers, the kubelet API.

Start order: the kubelet API (so the API server can reach new nodes at once), the
watches (pods of fargate-scheduler, our nodes, the fleet), then, once all three
have synced, the reconcilers: nothing is decided on a partial view, which is what
makes a restart safe (orphans are only deleted when we know they are orphans).
Every background task is named. A loop that fails (the API server restarting, say)
is restarted with back-off and logged once per outage (``supervision``), never lost;
``/readyz`` says not ready while the API server cannot be reached. The process exits
only when it loses the leader Lease (so a restart rejoins as a standby).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pydantic
import yaml
from aiohttp import web

from vk_fargate import errors, memory, metrics, observability, settings, supervision, world
from vk_fargate.admission import registration, worker
from vk_fargate.admission import server as admission_server
from vk_fargate.aws import profilecheck
from vk_fargate.aws import session as aws_session
from vk_fargate.controllers import (
    awsauth,
    containerevents,
    evictions,
    fleetwatch,
    logrouter,
    nodes,
    pods,
    profiles,
    queueing,
    unrouted,
    volumes,
)
from vk_fargate.controllers import services as service_tables
from vk_fargate.fargate import dns as fargate_dns
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fargate import services as fargate_services
from vk_fargate.fleet import backend as fleet_backend
from vk_fargate.fleet import client as fleet_client
from vk_fargate.k8s import client, events, informers, kube, leaderelection
from vk_fargate.k8s import profiles as k8s_profiles
from vk_fargate.kubelet import auth, backend, endpoints, server, sessions, tls
from vk_fargate.scheduler import enis, scheduling

log = logging.getLogger(__name__)
SYNC_TIMEOUT = 120.0  # seconds to wait for the first list of pods, nodes and microVMs
NAMESPACE = "namespace"  # the services' index
SERVICES_WAIT = 15.0  # seconds pods wait for the first Service table


def load_profiles(path: Path | None) -> list[fargate_profiles.Profile]:
    """Profiles from the provider's config file (a YAML list), for clusters without the CRD."""
    if path is None:
        return []
    try:
        documents = yaml.safe_load(path.read_text()) or []
        return [fargate_profiles.Profile.model_validate(d) for d in documents]
    except (OSError, yaml.YAMLError, pydantic.ValidationError, TypeError) as exc:
        raise errors.ConfigError(f"invalid profiles file {path}: {exc}") from exc


class Provider:
    """Everything ``vk-fargate run`` runs, built whole from its settings and connections
    (``aws_clients`` when ``cfg`` enables AWS); ``start`` serves and watches."""

    def __init__(
        self,
        cfg: settings.ProviderSettings,
        api: kube.Kube,
        fleet: fleet_backend.MicroVMs,
        *,
        aws_clients: aws_session.Clients | None = None,
    ) -> None:
        self.cfg = cfg
        self.api = api
        self.fleet = fleet
        self.aws_clients = aws_clients
        self.leading = asyncio.Event()
        self.pod_informer = informers.Informer(
            api,
            "/api/v1/pods",
            name="pods",
            field_selector=f"spec.schedulerName={cfg.scheduler_name}",
        )
        self.node_informer = informers.Informer(
            api,
            "/api/v1/nodes",
            name="nodes",
            label_selector=f"{fargate_nodes.CLUSTER_LABEL}={cfg.cluster_name}",
        )
        self.service_informer = informers.Informer(api, "/api/v1/services", name="services")
        self.service_informer.add_indexer(NAMESPACE, lambda s: [s["metadata"]["namespace"]])
        self.slice_informer = informers.Informer(
            api, "/apis/discovery.k8s.io/v1/endpointslices", name="endpointslices"
        )
        # The cluster's Service ranges, unless the settings name them.
        self.cidr_informer = (
            None
            if cfg.service_cidrs
            else informers.Informer(
                api, "/apis/networking.k8s.io/v1/servicecidrs", name="servicecidrs"
            )
        )
        self.tables = service_tables.ServiceTables(
            fleet,
            cluster=cfg.cluster_name,
            services_informer=self.service_informer,
            slices=self.slice_informer,
            cidrs=self._service_cidrs,
        )
        for informer in self._service_informers():
            informer.subscribe(self.tables.changed)
        self.world = world.World(self.pod_informer, self.node_informer)
        self.recorder = events.Recorder(api, component="kubelet", instance=socket.gethostname())
        # Queues by direction: pods from Kubernetes (place, delete) and status from the
        # fleet, so that a status write never waits behind placements; one key at a time.
        exclusive = queueing.Exclusive()
        retries = queueing.Retries(
            cfg.retry_first_seconds, cfg.retry_max_seconds, cfg.retry_qps, cfg.retry_burst
        )
        self.queue = queueing.Queue(
            self._reconcile, workers=cfg.workers, name="pods", exclusive=exclusive, retries=retries
        )
        self.status_queue = queueing.Queue(
            self._report,
            workers=cfg.status_workers,
            name="status",
            exclusive=exclusive,
            retries=retries,
        )
        self.aws = aws_session.AwsSettings.from_provider(cfg)
        self.profiles = profiles.ProfileController(
            api,
            self.world,
            load_profiles(cfg.profiles_file),
            recorder=self.recorder,
            checker=self._check_profile if self.aws.enabled else None,
            dns_recheck_seconds=cfg.profile_dns_recheck_seconds,
        )
        serving = tls.server_context(
            client_ca=cfg.kubelet_client_ca_file,
            cert_file=cfg.kubelet_tls_cert_file,
            key_file=cfg.kubelet_tls_key_file,
            hosts=(cfg.kubelet_advertise_address,),
        )
        self.kubelet = server.KubeletServer(
            backend.Backend(self.world, fleet),
            auth.Guard(api, client_cas=serving.client_cas),
            serving.context,
            host=cfg.kubelet_bind,
            port=cfg.kubelet_port,
            streams=sessions.Sessions(per_pod=cfg.streams_per_pod, total=cfg.streams_max),
            stream_idle_timeout=cfg.stream_idle_timeout_seconds,
        )
        self.endpoints = endpoints.NodeEndpoints(
            api,
            self.kubelet,
            self.world,
            address=cfg.kubelet_advertise_address,
            leading=self.leading.is_set,
        )
        self.scheduler = scheduling.Scheduler(
            api,
            fleet,
            self.recorder,
            self.world,
            cfg,
            retry=self.queue.later,
            enis=enis.Enis(aws_clients, cluster=cfg.cluster_name) if aws_clients else None,
            aws_backend=aws_clients is not None,
            node_port=self.kubelet.serve_node,
            profiles=self.profiles.profiles,
            services=self._services,
            dns_cluster=self._dns_cluster,
        )
        self.volumes = volumes.VolumeSync(
            api,
            fleet,
            self.recorder,
            self.world,
            self.scheduler.tokens,
            resync_seconds=cfg.volume_resync_seconds,
            retries=retries,
        )
        self.scheduler.placed = self.volumes.placed
        self.pods = pods.PodReconciler(api, fleet, self.recorder, self.world, self.scheduler)
        self.unrouted = unrouted.Unrouted(
            api,
            self.recorder,
            self.profiles.profiles,
            self.profiles.created,
            scheduler=cfg.scheduler_name,
            excluded_namespaces=registration.excluded_namespaces(cfg.namespace),
        )
        self.aws_auth: awsauth.AwsAuth | None = None
        self.log_router: logrouter.LogRouter | None = None
        if self.aws.enabled:
            self.aws_auth = awsauth.AwsAuth(api, self.world, self._profile)
            self.log_router = logrouter.LogRouter(api, fleet, self.world, self.recorder, self.aws)
        self.heartbeats = nodes.Heartbeats(
            api, self.world, cfg, not_ready=self.aws_auth.problem if self.aws_auth else None
        )
        self.evictions = evictions.Evictions(
            api,
            self.recorder,
            self.world,
            self.profiles.profiles,
            retry_seconds=cfg.eviction_retry_seconds,
            budget_check_seconds=cfg.budget_check_seconds,
        )
        self.pod_informer.subscribe(self._on_pod)
        self.node_informer.subscribe(self._on_node)
        self.admission: worker.Worker | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.elector: leaderelection.Elector | None = None
        if cfg.leader_elect:
            self.elector = leaderelection.Elector(
                api,
                namespace=cfg.namespace,
                name=cfg.leader_lease,
                identity=os.environ.get("POD_NAME") or socket.gethostname(),
                duration=cfg.leader_lease_seconds,
                renew_deadline=cfg.leader_renew_deadline_seconds,
                retry=cfg.leader_retry_seconds,
            )
        self.tasks = supervision.Tasks()  # every background task of the provider

    async def _reconcile(self, uid: str) -> None:
        await self.pods.reconcile(uid)

    async def _report(self, uid: str) -> None:
        """A change the fleet reported: a pod still to be placed is the pods queue's
        (its placement goes on there, at once); any other is reconciled here."""
        pod = self.world.pods.get(uid)
        meta = (pod or {}).get("metadata") or {}
        unbound = pod is not None and not (pod.get("spec") or {}).get("nodeName")
        if unbound and not meta.get("deletionTimestamp"):
            self.queue.add(uid)
            return
        await self.pods.reconcile(uid)

    def _services(self, namespace: str) -> list[kube.JSON]:
        """The Services of ``namespace`` (service links), from the watch."""
        return self.service_informer.by_index(NAMESPACE, namespace)

    def _service_informers(self) -> list[informers.Informer]:
        found = [self.service_informer, self.slice_informer]
        return found + ([self.cidr_informer] if self.cidr_informer is not None else [])

    def _service_cidrs(self) -> list[str]:
        if self.cfg.service_cidrs:
            return list(self.cfg.service_cidrs)
        assert self.cidr_informer is not None
        return fargate_services.cidrs(self.cidr_informer.cache.values())

    def _dns_cluster(self) -> fargate_dns.Cluster:
        """The kubelet's clusterDNS (the settings', else kube-dns's ClusterIP, as it is
        now) and clusterDomain."""
        servers = tuple(self.cfg.cluster_dns) or fargate_dns.kube_dns(
            self.service_informer.by_index(NAMESPACE, "kube-system")
        )
        return fargate_dns.Cluster(servers, self.cfg.cluster_domain)

    def _on_pod(self, kind: str, pod: kube.JSON) -> None:
        self.queue.add(pod["metadata"]["uid"])
        if kind == "DELETED":
            self.volumes.forget(pod["metadata"]["uid"])  # its tokens, if never placed

    def _on_node(self, kind: str, node: kube.JSON) -> None:
        uid = world.pod_of(node)
        if uid:
            self.queue.add(uid)
        if kind == "DELETED":
            self.scheduler.name_freed(node["metadata"]["name"])
        if self.endpoints is not None:
            self.endpoints.changed(node["metadata"]["name"])

    async def start(self) -> None:
        await self.kubelet.start()
        self.tasks.forever("node-endpoints", self.endpoints.run)
        await self._serve_metrics()
        await self._start_webhooks()
        self.tasks.forever("heap-trim", memory.trim_forever)
        self.tasks.forever("watch-pods", self.pod_informer.run)
        self.tasks.forever("watch-nodes", self.node_informer.run)
        self.tasks.forever("watch-services", self.service_informer.run)
        self.tasks.forever("watch-endpointslices", self.slice_informer.run)
        if self.cidr_informer is not None:
            self.tasks.forever("watch-servicecidrs", self.cidr_informer.run)
        self.tasks.forever(
            "watch-fleet",
            lambda: fleetwatch.run(
                self.fleet,
                self.world,
                self.status_queue.add,
                cluster=self.cfg.cluster_name,
                on_notice=self.evictions.notice,
                on_container_event=functools.partial(
                    containerevents.record, self.recorder, self.world
                ),
            ),
        )
        crd = await k8s_profiles.ensure_crd(self.api) if self.cfg.install_crd else True
        profiles_known = self.profiles.informer.synced
        if crd:
            self.tasks.forever("fargate-profiles", lambda: self.profiles.run(self.leading))
        else:
            profiles_known = asyncio.Event()  # the config file's only: known now
            profiles_known.set()
        self.tasks.forever("unrouted-pods", lambda: self.unrouted.run(self.leading, profiles_known))
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                await self.pod_informer.synced.wait()
                await self.node_informer.synced.wait()
                for informer in self._service_informers():
                    await informer.synced.wait()
                await self.world.fleet_synced.wait()
        except TimeoutError:
            raise errors.ConfigError(
                f"the cluster or the fleet ({self.cfg.fleet_url}) did not answer within "
                f"{SYNC_TIMEOUT:.0f}s"
            ) from None
        if self.elector is not None:
            self.tasks.forever("leader-election", self.elector.run)
            self.tasks.once("leadership", self._follow_leadership(), fatal=True)
        else:
            self.leading.set()
            self._lead()

    async def _follow_leadership(self) -> None:
        assert self.elector is not None
        await self.elector.leading.wait()
        self.leading.set()
        self._lead()
        await self.elector.lost.wait()
        raise errors.VkFargateError("lost the leader lease; exiting so a restart rejoins")

    def _profile(self, name: str) -> fargate_profiles.Profile | None:
        return next((p for p in self.profiles.profiles() if p.name == name), None)

    async def _check_profile(self, profile: fargate_profiles.Profile) -> profilecheck.Verdict:
        assert self.aws_clients is not None
        return await profilecheck.check(
            self.aws_clients, subnets=profile.subnets, role_arn=profile.pod_execution_role_arn
        )

    async def _collect_enis(self) -> None:
        """ENIs of pods that are gone (a crash, a restart) are deleted once, at start."""
        if self.scheduler.enis is not None:
            gone = await self.scheduler.enis.collect(set(self.world.pods))
            if gone:
                log.info("deleted %d ENIs of pods that no longer exist", len(gone))

    def _lead(self) -> None:
        """What only the leader does: put the Service table, reconcile pods (once the
        table is in force), heartbeat nodes, evict."""
        self.tasks.forever("service-tables", self.tables.run)
        self.tasks.once("pods-after-services", self._reconcile_pods())
        self.status_queue.start()
        self.endpoints.changed()  # the leader owns every node's port and address
        self.tasks.once("eni-collection", self._collect_enis())
        if self.aws_auth is not None:
            self.tasks.forever("aws-auth", self.aws_auth.run)
        if self.log_router is not None:
            self.tasks.forever("log-router", self.log_router.run)
        self.tasks.forever("node-heartbeats", self.heartbeats.run)
        self.tasks.forever("patch-evictions", self.evictions.run)
        self.tasks.forever("budget-warnings", self.evictions.watch_budgets)
        log.info(
            "leading: %d pods, %d microVMs, %d nodes",
            len(self.world.pods),
            len(self.world.vms),
            len(self.world.nodes),
        )

    async def _reconcile_pods(self) -> None:
        """Start the pods queue once the first Service table is in force (or after
        ``SERVICES_WAIT`` seconds, said in the log), so pods start with their rules."""
        try:
            async with asyncio.timeout(SERVICES_WAIT):
                await self.tables.first.wait()
        except TimeoutError:
            log.warning("no Service table in force after %ss; placing pods anyway", SERVICES_WAIT)
        for uid in {*self.world.pods, *self.world.vms, *self.world.nodes_by_pod}:
            self.queue.add(uid)
        self.queue.start()
        self.volumes.start(set(self.world.pods))

    def _state(self) -> dict[str, Any]:
        """What the metrics' gauges show, read at scrape time."""
        return observability.snapshot(
            self.world,
            region=self.cfg.region,
            watches={
                "pods": self.pod_informer,
                "nodes": self.node_informer,
                "fargateprofiles": self.profiles.informer,
            },
            lease_lag=self.heartbeats.max_lag,
            leading=self.leading.is_set(),
        )

    async def _serve_metrics(self) -> None:
        """/metrics, and /healthz and /readyz for the Deployment's probes."""
        metrics.REGISTRY.register(metrics.StateCollector(self._state))
        self._metrics_runner = await observability.serve(
            host=self.cfg.metrics_bind,
            port=self.cfg.metrics_port,
            ready=lambda: (
                self.pod_informer.synced.is_set()
                and self.world.fleet_synced.is_set()
                and self.api.unreachable_since is None
            ),
        )

    async def _start_webhooks(self) -> None:
        """Serve the admission webhooks and register them with the API server."""
        if self.cfg.webhook_url:
            target: registration.Target = registration.UrlTarget(self.cfg.webhook_url.rstrip("/"))
            hosts: tuple[str, ...] = (
                self.cfg.webhook_url.split("//", 1)[1].split(":")[0].strip("[]"),
            )
        else:
            namespace, _, name = self.cfg.webhook_service.partition("/")
            target = registration.ServiceTarget(namespace, name)
            hosts = (f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local")
        serving = tls.server_context(
            client_ca=None,
            cert_file=self.cfg.webhook_tls_cert_file,
            key_file=self.cfg.webhook_tls_key_file,
            hosts=hosts,
        )
        self.admission = worker.Worker(
            admission_server.AdmissionServer(
                self.profiles,
                serving.context,
                host=self.cfg.webhook_bind,
                port=self.cfg.webhook_port,
                scheduler=self.cfg.scheduler_name,
            )
        )
        await self.admission.start()
        if self.cfg.webhook_register:
            await registration.register(
                self.api,
                registration.documents(
                    target=target,
                    ca_bundle=serving.cert,
                    provider_namespace=self.cfg.namespace,
                ),
            )

    async def stop(self) -> None:
        if self.elector is not None:
            await self.elector.release()
        log.info(
            "stopping; API requests: %d (watch restarts: pods %d, nodes %d)",
            self.api.requests,
            self.pod_informer.restarts,
            self.node_informer.restarts,
        )
        await self.queue.stop()
        await self.status_queue.stop()
        await self.volumes.stop()
        await self.recorder.close()
        await self.tasks.stop()
        await self.kubelet.stop()
        if self.admission is not None:
            await self.admission.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()


async def run(cfg: settings.ProviderSettings, *, ready: asyncio.Event | None = None) -> int:
    """Run the provider until SIGTERM/SIGINT; 1 if a background task failed."""
    token_file = cfg.fleet_token_file
    if token_file is None:
        raise errors.ConfigError("set VK_FARGATE_FLEET_TOKEN_FILE (the fleet's bearer token)")
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read the fleet token {token_file}: {exc}") from exc
    tls = fleet_client.trusting(cfg.fleet_ca_file) if cfg.fleet_ca_file else None
    aws = aws_session.AwsSettings.from_provider(cfg)
    aws_clients = await aws_session.connect(aws) if aws.enabled else None
    api = kube.Kube(await client.connect(cfg.kubeconfig))
    fleet = fleet_client.FleetClient(cfg.fleet_url, token, ssl_context=tls)
    provider = Provider(cfg, api, fleet, aws_clients=aws_clients)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await provider.start()
        if ready is not None:
            ready.set()
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(provider.tasks.failed.wait()),
        ]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    finally:
        await provider.stop()
        await fleet.close()
        await api.close()
    return 1 if provider.tasks.failed.is_set() else 0
