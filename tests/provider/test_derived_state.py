"""The pod path keeps no copies of its own: what it does next follows from the pod (its
status, its conditions) and the microVM as the cluster and the fleet say now, so a
restart, a new leader or a fleet that lost a request find the same next step.

Driven directly, in process, against the session's control plane and a real fleetd;
the pods use a scheduler name of their own, so the session's provider leaves them
alone."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests.fleetd import helpers
from tests.provider import conftest
from vk_fargate import settings, world
from vk_fargate.controllers import pods
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fleet import client as fleet_api
from vk_fargate.fleet import models
from vk_fargate.k8s import events, kube
from vk_fargate.scheduler import scheduling

pytestmark = pytest.mark.e2e
CLUSTER = "derived-state"
SCHEDULER = "derived-scheduler"
PROFILE = fargate_profiles.Profile(name="derived", selectors=[{"namespace": "derived-*"}])


def _running(vm: models.MicroVM) -> bool:
    return helpers.container(vm, "main").state == "running"


def _path(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}"


def _scheduler(
    door: kube.Kube,
    fleet: fleet_api.FleetClient,
    state: world.World,
    retries: list[float] | None = None,
) -> scheduling.Scheduler:
    cfg = settings.ProviderSettings(cluster_name=CLUSTER, scheduler_name=SCHEDULER)
    recorder = events.Recorder(door, component="kubelet", instance="test")
    return scheduling.Scheduler(
        door,
        fleet,
        recorder,
        state,
        cfg,
        retry=lambda _uid, delay: (retries if retries is not None else []).append(delay),
        profiles=lambda: [PROFILE],
    )


async def _cleanup(api: k8s.ApiClient, ns: str) -> None:
    core = k8s.CoreV1Api(api)
    selector = f"{fargate_nodes.CLUSTER_LABEL}={CLUSTER}"
    for node in (await core.list_node(label_selector=selector)).items:
        with contextlib.suppress(k8s.ApiException):
            await core.delete_node(node.metadata.name)
        with contextlib.suppress(k8s.ApiException):
            await k8s.CoordinationV1Api(api).delete_namespaced_lease(
                node.metadata.name, "kube-node-lease"
            )
    await core.delete_namespace(ns)


async def test_a_deleting_pod_whose_microvm_runs_again_is_asked_to_stop_again(
    api: k8s.ApiClient, fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "derived")
    pod = conftest.shell_pod("leaving", "exec sleep 300", SCHEDULER)
    pod["spec"].update(nodeName="fargate-ip-elsewhere", terminationGracePeriodSeconds=30)
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    await core.delete_namespaced_pod("leaving", ns, grace_period_seconds=30)  # Terminating
    door = kube.Kube(api)
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        spec = helpers.spec(helpers.shell("main", "exec sleep 300"))
        spec.labels[fargate_nodes.CLUSTER_LABEL] = CLUSTER
        await fleet_client.put_microvm(uid, spec)
        running = await helpers.until_vm(fleet_client, uid, _running)
        asked: list[str] = []
        delete = fleet_client.delete_microvm

        async def counted(vm_id: str, *, grace_seconds: int | None = None) -> models.MicroVM:
            asked.append(vm_id)
            return await delete(vm_id, grace_seconds=grace_seconds)

        fleet_client.delete_microvm = counted  # type: ignore[method-assign]
        state = world.World()
        state.pod_cache.store(await door.get(_path(ns, "leaving")))
        state.vms[uid] = running
        state.fleet_synced.set()
        scheduler = _scheduler(door, fleet_client, state)
        reconciler = pods.PodReconciler(door, fleet_client, scheduler.recorder, state, scheduler)
        try:
            await reconciler.reconcile(uid)
            assert asked == [uid]
            await reconciler.reconcile(uid)  # the fleet's answer says stopping: wait
            assert asked == [uid], "a microVM that is stopping is not asked again"
            # The fleet lost the request (an older fleetd restarted): it lists it running.
            state.vms[uid] = running
            await reconciler.reconcile(uid)
            assert asked == [uid, uid], "the microVM's state, not a memory, says what to do"
        finally:
            await delete(uid, grace_seconds=0)
            await _cleanup(api, ns)


@pytest.fixture
async def tiny_fleet(
    tmp_path: Path, registry: devregistry.Registry
) -> AsyncIterator[devfleet.Fleet]:
    """A fleetd whose one host has a single vCPU: a 2 vCPU pod never fits."""
    net = next(devfleet.free_subnets(1)[0].subnets(new_prefix=28))
    subnets = [{"id": "subnet-tiny", "cidr": str(net), "zone": "eu-central-1a"}]
    hosts = [{"id": "metal-tiny", "zone": "eu-central-1a", "vcpus": 1, "mem_mib": 2048}]
    running = await devfleet.start(
        tmp_path / "fleet", subnets=subnets, hosts=hosts, registry=registry.host
    )
    try:
        yield running
    finally:
        running.stop()


def _scheduled(pod: kube.JSON) -> dict[str, Any]:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "PodScheduled"), {})


async def test_the_placement_back_off_goes_on_from_the_pods_condition_after_a_restart(
    api: k8s.ApiClient, tiny_fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "derived")
    big = {
        "name": "main",
        "image": "busybox",
        "command": ["sleep", "300"],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
    }
    await core.create_namespaced_pod(ns, conftest.pod("waits", big, SCHEDULER))
    door = kube.Kube(api)
    async with fleet_api.FleetClient(tiny_fleet.url, tiny_fleet.token) as fleet_client:
        try:
            retries: list[float] = []
            state = world.World()
            state.pod_cache.store(await door.get(_path(ns, "waits")))
            await _scheduler(door, fleet_client, state, retries).place(
                await door.get(_path(ns, "waits"))
            )
            assert retries == [scheduling.RETRY_MIN]
            pod = await door.get(_path(ns, "waits"))
            scheduled = _scheduled(pod)
            assert (scheduled.get("status"), scheduled.get("reason")) == ("False", "Unschedulable")
            assert scheduled["message"].startswith("Pod provisioning timed out (will retry)")

            # A provider that had been retrying for 100 s went away; a new one takes over.
            since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=100)
            scheduled["lastTransitionTime"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
            await door.patch(
                _path(ns, "waits") + "/status", {"status": {"conditions": [scheduled]}}
            )
            after: list[float] = []
            fresh = world.World()
            pod = await door.get(_path(ns, "waits"))
            fresh.pod_cache.store(pod)
            await _scheduler(door, fleet_client, fresh, after).place(pod)
            assert after and after[0] >= 95, f"back-off started over: {after}"
            assert (
                _scheduled(await door.get(_path(ns, "waits")))["lastTransitionTime"]
                == (scheduled["lastTransitionTime"])
            ), "waiting goes on: the condition keeps its time"
        finally:
            await _cleanup(api, ns)


async def test_container_events_are_sent_once_as_the_status_says_it(
    api: k8s.ApiClient, fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "derived")
    pod = conftest.shell_pod("runs", "exec sleep 300", SCHEDULER)
    pod["spec"].update(nodeName="fargate-ip-elsewhere")
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    door = kube.Kube(api)
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        spec = helpers.spec(helpers.shell("main", "exec sleep 300"))
        spec.labels[fargate_nodes.CLUSTER_LABEL] = CLUSTER
        await fleet_client.put_microvm(uid, spec)
        try:
            for _ in range(2):  # a second process (a restart), reading the pod afresh
                state = world.World()
                state.pod_cache.store(await door.get(_path(ns, "runs")))
                state.vms[uid] = await helpers.until_vm(fleet_client, uid, _running)
                state.fleet_synced.set()
                scheduler = _scheduler(door, fleet_client, state)
                reconciler = pods.PodReconciler(
                    door, fleet_client, scheduler.recorder, state, scheduler
                )
                for _ in range(3):  # the status written is read back from the cache
                    await reconciler.reconcile(uid)
                await scheduler.recorder.close()
            status = (await door.get(_path(ns, "runs")))["status"]
            assert "running" in status["containerStatuses"][0]["state"]
            written = await core.list_namespaced_event(
                ns, field_selector=f"involvedObject.uid={uid}"
            )
            started = [e for e in written.items if e.reason == "Started"]
            assert [e.count for e in started] == [1], [(e.reason, e.count) for e in written.items]
        finally:
            await fleet_client.delete_microvm(uid, grace_seconds=0)
            await _cleanup(api, ns)
