"""Fargate's rules on the real stack: refusals, annotations, profiles, patch evictions."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate import errors
from vk_fargate.devcluster import cluster
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client as fleet_api
from vk_fargate.fleet import models

pytestmark = pytest.mark.e2e


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": "busybox", "command": ["sleep", "300"]}
    container.update(spec.pop("container", {}))
    return conftest.pod(name, container, **spec)


async def _events(core: k8s.CoreV1Api, ns: str, name: str) -> list[k8s.CoreV1Event]:
    found = await core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return list(found.items)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"container": {"securityContext": {"privileged": True}}},
            "Pod not supported on Fargate: invalid SecurityContext fields: Privileged",
        ),
        (
            {"hostNetwork": True, "container": {"ports": [{"containerPort": 80, "hostPort": 80}]}},
            "Pod not supported on Fargate: fields not supported: HostNetwork, port contains HostIP "
            "or HostPort",
        ),
        (
            {"volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]},
            "Pod not supported on Fargate: volumes not supported: host is of an unsupported volume "
            "Type",
        ),
        (
            {"container": {"resources": {"requests": {"cpu": "17"}}}},
            "Pod not supported on Fargate: the pod requests 17000m vCPU",
        ),
        (  # the fleet API's bound, checked before any microVM is asked for
            {"container": {"workingDir": "../../../../etc"}},
            "Pod not supported on Fargate: working_dir: container app: workingDir "
            "'../../../../etc' is not an absolute path",
        ),
    ],
)
async def test_refused_pods_stay_pending_with_eks_message(
    api: k8s.ApiClient, provider: conftest.Provider, spec: dict[str, Any], message: str
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "refused")
    await core.create_namespaced_pod(ns, _pod("nope", **spec))

    async def refusal() -> k8s.CoreV1Event | None:
        events = [e for e in await _events(core, ns, "nope") if e.reason == "FailedScheduling"]
        return events[0] if events else None

    event = await waiting.until(refusal, what="a FailedScheduling event")
    assert event.message.startswith(message)
    assert event.type == "Warning" and event.source.component == "fargate-scheduler"
    pod = await core.read_namespaced_pod("nope", ns)
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    conditions = {c.type: c for c in pod.status.conditions or []}
    assert conditions["PodScheduled"].status == "False"
    await core.delete_namespace(ns)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {},
            "Pod not supported on Fargate: no Fargate profile selects pods in namespace "
            "{ns!r} (no labels)",
        ),
        (  # a profile that exists, claimed by a pod it does not select
            {"eks.amazonaws.com/fargate-profile": "e2e", "app": "web"},
            "Pod not supported on Fargate: fargate profile e2e does not select pods in "
            "namespace {ns!r} with labels app=web",
        ),
        (
            {"eks.amazonaws.com/fargate-profile": "rel"},
            "Pod not supported on Fargate: fargate profile rel (the pod's "
            "eks.amazonaws.com/fargate-profile label) does not exist",
        ),
    ],
)
async def test_a_pod_no_profile_selects_is_refused_whatever_it_claims(
    api: k8s.ApiClient,
    provider: conftest.Provider,
    fleet: devfleet.Fleet,
    labels: dict[str, str],
    message: str,
) -> None:
    """schedulerName set by hand, or a profile label set by hand, is not a way onto Fargate."""
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "unprofiled")
    manifest = _pod("stray")
    manifest["metadata"]["labels"] = labels
    created = await core.create_namespaced_pod(ns, manifest)

    async def refusal() -> k8s.CoreV1Event | None:
        events = [e for e in await _events(core, ns, "stray") if e.reason == "FailedScheduling"]
        return events[0] if events else None

    event = await waiting.until(refusal, what="a FailedScheduling event")
    assert event.message == message.format(ns=ns)
    pod = await core.read_namespaced_pod("stray", ns)
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        with pytest.raises(errors.NotFound):
            await fleet_client.get_microvm(created.metadata.uid)
    await core.delete_namespace(ns)


async def test_logging_annotation_follows_the_aws_logging_config_map(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "logging")
    await core.create_namespaced_pod(ns, _pod("without"))

    async def annotations(name: str) -> dict[str, str] | None:
        pod = await core.read_namespaced_pod(name, ns)
        found = pod.metadata.annotations or {}
        return found if "Logging" in found else None

    first = await waiting.until(lambda: annotations("without"), what="the Logging annotation")
    assert first["Logging"] == "LoggingDisabled: LOGGING_CONFIGMAP_NOT_FOUND"
    assert any(
        e.reason == "LoggingDisabled" and e.message == "LOGGING_CONFIGMAP_NOT_FOUND"
        for e in await _events(core, ns, "without")
    )
    await core.create_namespace(
        k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(
                name="aws-observability", labels={"aws-observability": "enabled"}
            )
        )
    )
    try:
        await core.create_namespaced_config_map(
            "aws-observability",
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name="aws-logging"),
                data={"output.conf": "[OUTPUT]\n    Name cloudwatch_logs\n"},
            ),
        )
        await core.create_namespaced_pod(ns, _pod("invalid"))
        second = await waiting.until(lambda: annotations("invalid"), what="the Logging annotation")
        assert second["Logging"] == "LoggingDisabled: LOGGING_CONFIGMAP_INVALID"
        [event] = [e for e in await _events(core, ns, "invalid") if e.reason == "LoggingDisabled"]
        assert event.type == "Warning"
        assert event.message.startswith("LOGGING_CONFIGMAP_INVALID: aws-logging ConfigMap is")
        assert "region" in event.message and "log_group_name" in event.message
        await core.patch_namespaced_config_map(
            "aws-logging",
            "aws-observability",
            {
                "data": {
                    "output.conf": "[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n"
                    "    region eu-central-1\n    log_group_name fargate\n"
                    "    log_stream_prefix fargate-\n"
                }
            },
        )
        await core.create_namespaced_pod(ns, _pod("valid"))
        third = await waiting.until(lambda: annotations("valid"), what="the Logging annotation")
        # Valid, but this provider has no AWS backend: nothing would ship, and it says so.
        assert third["Logging"] == "LoggingDisabled: AWS_BACKEND_DISABLED"
    finally:
        await core.delete_namespace("aws-observability")
        await core.delete_namespace(ns)


def _cli(local_cluster: cluster.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vk_fargate.cli",
            "profile",
            "--kubeconfig",
            str(local_cluster.kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_profile_lifecycle_with_the_cli(
    api: k8s.ApiClient, provider: conftest.Provider, local_cluster: cluster.Cluster
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "profiled")
    created = _cli(
        local_cluster, "create", "--name", "fp-e2e", "--namespace", ns, "--labels", "tier=web"
    )
    assert created.returncode == 0, created.stderr
    assert '[✔]  created Fargate profile "fp-e2e"' in created.stdout
    listed = _cli(local_cluster, "get", "-o", "yaml")
    assert (
        f"- name: fp-e2e\n  selectors:\n  - namespace: {ns}\n    labels:\n      tier: web\n"
        f"  status: ACTIVE" in listed.stdout
    )

    custom = k8s.CustomObjectsApi(api)
    obj = await custom.get_cluster_custom_object(
        "fargate.vk-fargate.io", "v1", "fargateprofiles", "fp-e2e"
    )
    obj["spec"]["selectors"][0]["namespace"] = "elsewhere"
    with pytest.raises(k8s.ApiException) as caught:
        await custom.replace_cluster_custom_object(
            "fargate.vk-fargate.io", "v1", "fargateprofiles", "fp-e2e", obj
        )
    assert "Fargate profiles are immutable" in caught.value.body

    # A pod the profile placed (its label says so) is stopped when the profile goes.
    await core.create_namespaced_pod(
        ns,
        {
            **_pod("placed"),
            "metadata": {
                "name": "placed",
                "labels": {"eks.amazonaws.com/fargate-profile": "fp-e2e", "tier": "web"},
            },
        },
    )

    async def running() -> bool:
        return (await core.read_namespaced_pod("placed", ns)).status.phase == "Running"

    await waiting.until(running, what="the profile's pod Running")
    deleted = _cli(local_cluster, "delete", "--name", "fp-e2e")
    assert deleted.returncode == 0, deleted.stderr
    assert '[✔]  deleted Fargate profile "fp-e2e"' in deleted.stdout
    assert not (await core.list_namespaced_pod(ns)).items
    await core.delete_namespace(ns)


async def test_a_drain_evicts_through_the_pdb_retries_once_then_deletes(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    policy = k8s.PolicyV1Api(api)
    ns = await conftest.namespace(api, "patching")
    labels = {"app": "simple-nginx-app"}
    await apps.create_namespaced_deployment(
        ns,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "simple-web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels | conftest.for_scheduler()},
                    "spec": {
                        "schedulerName": "fargate-scheduler",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {"name": "web", "image": "busybox", "command": ["sleep", "3600"]}
                        ],
                    },
                },
            },
        },
    )
    # A budget that allows no disruption at all: every eviction is refused.
    await policy.create_namespaced_pod_disruption_budget(
        ns,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "fg-pdb"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
        },
    )

    async def two_running() -> list[k8s.V1Pod] | None:
        pods = [
            p
            for p in (await core.list_namespaced_pod(ns)).items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]
        return pods if len(pods) == 2 else None

    before = await waiting.until(two_running, timeout=60, what="2 Running replicas")

    async def budget_seen() -> bool:
        pdb = await policy.read_namespaced_pod_disruption_budget("fg-pdb", ns)
        return bool(pdb.status and pdb.status.current_healthy == 2)

    await waiting.until(budget_seen, what="the budget to count 2 healthy pods")
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        vms = {vm.id: vm for vm in (await fleet_client.list_microvms({"namespace": ns})).items}
        target = before[0]
        host = vms[target.metadata.uid].status.host
        assert host is not None
        on_host = [p for p in before if vms[p.metadata.uid].status.host == host]
        try:
            await fleet_client.host_action(
                host, models.HostAction(action_type="Drain", grace_seconds=600)
            )

            async def steps() -> dict[str, k8s.CoreV1Event] | None:
                found = {e.reason: e for e in await _events(core, ns, target.metadata.name)}
                return found if "EvictionForced" in found else None

            seen = await waiting.until(steps, timeout=90, what="the forced eviction")
            evicting, blocked, forced = (
                seen[r] for r in ("Evicting", "EvictionBlocked", "EvictionForced")
            )
            assert "PodDisruptionBudget" in evicting.message
            assert evicting.first_timestamp <= blocked.first_timestamp <= forced.first_timestamp
            retry = (forced.first_timestamp - blocked.first_timestamp).total_seconds()
            assert retry >= 4, "retried once, after the configured delay (5 s)"
            after = await waiting.until(two_running, timeout=120, what="2 replicas again")
            vms = {vm.id: vm for vm in (await fleet_client.list_microvms({"namespace": ns})).items}
            replaced = [p for p in after if p.metadata.uid not in {q.metadata.uid for q in before}]
            assert len(replaced) == len(on_host)
            assert all(vms[p.metadata.uid].status.host != host for p in replaced)
        finally:
            await fleet_client.host_action(host, models.HostAction(action_type="Activate"))
    await core.delete_namespace(ns)


async def test_no_capacity_means_pending_with_a_retry_event_then_it_runs(
    api: k8s.ApiClient, provider: conftest.Provider, fleet: devfleet.Fleet
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "capacity")
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        hosts = [h.id for h in await fleet_client.hosts()]
        drain = models.HostAction(action_type="Drain", grace_seconds=3600)
        try:
            for host in hosts:  # nothing can be placed while every host drains
                await fleet_client.host_action(host, drain)
            await core.create_namespaced_pod(ns, _pod("waits"))

            async def timed_out() -> bool:
                return any(
                    e.reason == "FailedScheduling"
                    and e.message == f"Pod provisioning timed out (will retry) for pod: {ns}/waits"
                    for e in await _events(core, ns, "waits")
                )

            await waiting.until(timed_out, what="the provisioning-timed-out event")
            pod = await core.read_namespaced_pod("waits", ns)
            assert pod.status.phase == "Pending" and not pod.spec.node_name
        finally:
            for host in hosts:
                await fleet_client.host_action(host, models.HostAction(action_type="Activate"))

    async def running() -> bool:
        return (await core.read_namespaced_pod("waits", ns)).status.phase == "Running"

    await waiting.until(running, timeout=90, what="the pod placed once capacity is back")
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        assert len((await fleet_client.list_microvms({"namespace": ns})).items) == 1
    await core.delete_namespace(ns)


async def test_a_budget_that_selects_nothing_gets_a_warning(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    ns = await conftest.namespace(api, "typo")
    custom = k8s.CustomObjectsApi(api)
    await conftest.create_profile(api, ns, {"selectors": [{"namespace": ns}]})
    try:
        await k8s.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
            ns,
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "fg-pdb"},
                "spec": {
                    "minAvailable": 1,
                    "selector": {"matchLabels": {"app": "simple-ninx-app"}},
                },
            },
        )

        async def warned() -> k8s.CoreV1Event | None:
            found = [
                e
                for e in await _events(k8s.CoreV1Api(api), ns, "fg-pdb")
                if e.reason == "SelectsNoPods"
            ]
            return found[0] if found else None

        event = await waiting.until(warned, timeout=60, what="the SelectsNoPods warning")
        assert "app=simple-ninx-app" in event.message and event.type == "Warning"
    finally:
        await custom.delete_cluster_custom_object(
            "fargate.vk-fargate.io", "v1", "fargateprofiles", ns
        )
        await k8s.CoreV1Api(api).delete_namespace(ns)
