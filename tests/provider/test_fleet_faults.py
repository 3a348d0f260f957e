"""A network between the provider and the fleet that fails 30% of the time (503s, dropped
connections, answers lost after the fleet acted, event streams cut) costs time, never
correctness: every pod runs once, on one microVM and one node, none is failed or
restarted, and deleting them leaves nothing behind. On a control plane of its own, with
a provider that reaches the fleet through ``tests.faultproxy`` only; the test reads the
fleet directly."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from tests import faultproxy, waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import client as fleet_api
from vk_fargate.k8s import client

pytestmark = pytest.mark.e2e
CLUSTER = "faults"
BARE, REPLICAS = 8, 4
# Half of the PUTs fail, most of them after the fleet acted: with a dozen pods (and the
# PUTs they retry), some PUT answers are lost, what tests idempotency, in all but about
# one run in a thousand.
PUT_ODDS = faultproxy.Odds(refuse=0.10, drop=0.10, lose_reply=0.30)
# A run's event streams carry a few dozen chunks: one in seven is cut, several a run.
ODDS = faultproxy.Odds(cut_chunk=0.15)


def _deployment(labels: dict[str, str]) -> dict[str, Any]:
    template = conftest.shell_pod("unused", "exec sleep 3600")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        },
    }


class Seen:
    """Every pod of the namespace the API server ever showed, and each one's phases and
    highest container restart count along the way (from a watch: nothing is missed)."""

    def __init__(self) -> None:
        self.phases: dict[str, list[str]] = collections.defaultdict(list)
        self.restarts: dict[str, int] = collections.defaultdict(int)

    async def follow(self, core: k8s.CoreV1Api, ns: str) -> None:
        async with watch.Watch().stream(core.list_namespaced_pod, ns) as stream:
            async for event in stream:
                pod = event["object"]
                uid, phase = pod.metadata.uid, pod.status.phase
                if not self.phases[uid] or self.phases[uid][-1] != phase:
                    self.phases[uid].append(phase)
                for status in pod.status.container_statuses or []:
                    self.restarts[uid] = max(self.restarts[uid], status.restart_count)


async def _follow_fleet(fleet: fleet_api.FleetClient, ns: str, since: int, made: set[str]) -> None:
    """Every microVM the fleet had for ``ns`` after cursor ``since``, from its event
    stream, read directly: a duplicate the provider made and removed again is seen too."""
    async for event in fleet.events(since):
        vm = event.microvm
        if vm is not None and vm.spec.labels.get("namespace") == ns:
            made.add(vm.id)


async def test_every_pod_runs_once_through_a_faulty_network_to_the_fleet(
    own_cluster: cluster.Cluster, fleet: devfleet.Fleet, tmp_path: Path
) -> None:
    began = time.monotonic()
    proxy = faultproxy.FaultProxy(fleet.url, odds=ODDS, by_method={"PUT": PUT_ODDS})
    env = devprovider.environment(
        own_cluster, fleet, port=processes.free_ports(1)[0], cluster_name=CLUSTER
    )
    env["VK_FARGATE_FLEET_URL"] = await proxy.start()
    env["VK_FARGATE_PROFILES_FILE"] = str(conftest.profiles_file(tmp_path))
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    api = await client.connect(own_cluster.kubeconfig)
    direct = fleet_api.FleetClient(fleet.url, fleet.token)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    seen, made = Seen(), set[str]()
    followers: list[asyncio.Task[None]] = []
    try:
        await provider.start()
        ns = await conftest.namespace(api, "faults")
        since = (await direct.list_microvms({"namespace": ns})).cursor  # before any pod
        followers = [
            asyncio.create_task(seen.follow(core, ns), name="watch-fault-pods"),
            asyncio.create_task(_follow_fleet(direct, ns, since, made), name="follow-fleet"),
        ]
        for i in range(BARE):
            await core.create_namespaced_pod(ns, conftest.shell_pod(f"bare-{i}", "exec sleep 3600"))
        await apps.create_namespaced_deployment(
            ns, _deployment({"app": "web", **conftest.for_scheduler()})
        )

        async def all_running() -> list[Any] | None:
            found = (await core.list_namespaced_pod(ns)).items
            running = [p for p in found if p.status.phase == "Running"]
            return found if len(running) == BARE + REPLICAS else None

        pods = await waiting.until(all_running, timeout=120, what="every pod Running")
        uids = {p.metadata.uid for p in pods}
        assert len(pods) == BARE + REPLICAS, [p.metadata.name for p in pods]
        await asyncio.sleep(1)  # the watch has caught up with the list
        assert not any(task.done() for task in followers), followers
        assert set(seen.phases) == uids, "a pod was replaced"
        for pod in pods:
            uid = pod.metadata.uid
            assert "Failed" not in seen.phases[uid], (pod.metadata.name, seen.phases[uid])
            assert seen.restarts[uid] == 0, pod.metadata.name

        vms = (await direct.list_microvms({"namespace": ns})).items
        assert sorted(vm.id for vm in vms) == sorted(uids), "one microVM per pod, no other"
        assert made == uids, "a microVM was made for no pod, if only for a while"
        ours = (await direct.list_microvms({fargate_nodes.CLUSTER_LABEL: CLUSTER})).items
        assert {vm.id for vm in ours} == uids
        nodes = (
            await core.list_node(label_selector=f"{fargate_nodes.CLUSTER_LABEL}={CLUSTER}")
        ).items
        served = collections.Counter(
            n.metadata.annotations[fargate_nodes.POD_UID_ANNOTATION] for n in nodes
        )
        assert served == collections.Counter(uids), "one node per pod, no other"
        by_name = {n.metadata.name: n for n in nodes}
        for pod in pods:
            node = by_name[pod.spec.node_name]
            assert node.metadata.annotations[fargate_nodes.POD_UID_ANNOTATION] == pod.metadata.uid

        await core.delete_namespace(ns)

        async def all_gone() -> bool:
            left = (await direct.list_microvms({fargate_nodes.CLUSTER_LABEL: CLUSTER})).items
            nodes = await core.list_node(label_selector=f"{fargate_nodes.CLUSTER_LABEL}={CLUSTER}")
            return not left and not nodes.items

        # Seconds here; a pod whose DELETE answer was lost was stuck Terminating for 20 to
        # 60 s (test_stale_cache shows it directly).
        await waiting.until(all_gone, timeout=30, what="every microVM and node deleted")

        print(f"\nfaults injected {dict(proxy.counts)} in {time.monotonic() - began:.0f}s")
        for kind in (faultproxy.REFUSED, faultproxy.DROPPED, faultproxy.REPLY_LOST):
            assert proxy.injected(kind) > 0, (kind, proxy.counts)
        assert proxy.injected(faultproxy.CUT, "GET") > 0, proxy.counts
        assert proxy.injected(faultproxy.REPLY_LOST, "PUT") > 0, proxy.counts
        assert "Traceback" not in provider.log.read_text(), "faults are errors, not bugs"
    finally:
        for task in followers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        provider.stop()
        await proxy.stop()
        await direct.close()
        await api.close()
