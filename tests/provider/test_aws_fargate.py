"""Fargate's AWS-side behaviours through moto's server and a real provider process: a VPC
without DNS warns on the profile and keeps CoreDNS Pending until it is on, a pod's
lines reach CloudWatch Logs in order through the grep filter of filters.conf (and a
provider restart sends none twice), and a node whose pod execution role is not mapped
in aws-auth is NotReady until it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import parser

from tests import waiting
from tests.provider import conftest
from vk_fargate.aws import devaws, iam, session
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.devcluster import stack as devstack
from vk_fargate.k8s import client

pytestmark = pytest.mark.e2e
CLUSTER = "aws-fargate"
NS = "talkers"
GROUP = "/vk-fargate/e2e"
UNMATCHED = "/vk-fargate/unmatched"
LINES = [f"line {i}" for i in range(1, 61)]
# filters.conf drops lines 10-19 (grep on log) and names one filter it cannot apply.
FILTERS = (
    "[FILTER]\n    Name grep\n    Match kube.*\n    Exclude log ^line 1\\d$\n"
    "[FILTER]\n    Name kubernetes\n    Match kube.*\n"
)
KEPT = [line for line in LINES if not 10 <= int(line.split()[1]) <= 19]
# 30 lines, a pause (a provider restart may fall in it, or not), 30 more, then quiet.
TALK = (
    "for i in $(seq 1 30); do echo line $i; done; sleep 5; "
    "for i in $(seq 31 60); do echo line $i; done; exec sleep 3600"
)


@pytest.fixture
async def stack(
    control_plane_binaries: binaries.Binaries, tmp_path: Path, registry: devregistry.Registry
) -> AsyncIterator[tuple[cluster.Cluster, devaws.DevAws, devfleet.Fleet]]:
    # Free /24s of this machine, not a fixed layout: other fleets may be using 10.0.x.
    aws = await devaws.start(tmp_path / "aws", cluster_name=CLUSTER, layout=devstack.aws_layout())
    try:
        fleet = await devfleet.start(
            tmp_path / "fleet", subnets=aws.fleet_subnets(), registry=registry.host
        )
        try:
            async with cluster.Cluster(control_plane_binaries) as local:
                yield local, aws, fleet
        finally:
            fleet.stop()
    finally:
        aws.stop()


def _clients(aws: devaws.DevAws) -> tuple[Any, Any]:
    settings = session.AwsSettings(
        enabled=True, region=aws.world["region"], endpoint_url=aws.endpoint_url
    )
    credentials = ("testing", "testing")
    return (
        session.make_client(settings, "ec2", credentials=credentials),
        session.make_client(settings, "logs", credentials=credentials),
    )


def _stream(logs: Any, name: str) -> list[str]:
    try:
        answer = logs.get_log_events(logGroupName=GROUP, logStreamName=name, startFromHead=True)
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [e["message"] for e in answer["events"]]


async def test_dns_warning_logs_in_cloudwatch_and_aws_auth_readiness(
    stack: tuple[cluster.Cluster, devaws.DevAws, devfleet.Fleet], tmp_path: Path
) -> None:
    local, aws, fleet = stack
    world = aws.world
    ec2, logs = _clients(aws)
    ec2.modify_vpc_attribute(VpcId=world["vpc_id"], EnableDnsHostnames={"Value": False})
    port = processes.free_ports(1)[0]
    env = {**devprovider.environment(local, fleet, port=port, cluster_name=CLUSTER), **aws.env()}
    env["VK_FARGATE_PROFILE_DNS_RECHECK_SECONDS"] = "2"
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    api = await client.connect(local.kubeconfig)
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    try:
        await provider.start()
        for name in (NS, "aws-observability"):
            await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        await core.create_namespaced_config_map(
            "aws-observability",
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name="aws-logging"),
                data={
                    "output.conf": "[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n"
                    f"    region {world['region']}\n    log_group_name {GROUP}\n"
                    "    log_stream_prefix fargate-\n    auto_create_group true\n"
                    # Matches no container's tag (kube.var.log.containers...): gets nothing.
                    "[OUTPUT]\n    Name cloudwatch_logs\n    Match app.*\n"
                    f"    region {world['region']}\n    log_group_name {UNMATCHED}\n"
                    "    log_stream_prefix fargate-\n    auto_create_group true\n",
                    "filters.conf": FILTERS,
                },
            ),
        )
        await waiting.until(lambda: conftest.profiles_served(api), what="FargateProfiles served")
        await conftest.create_profile(
            api,
            "talk",
            {
                "selectors": [
                    {"namespace": NS},
                    {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
                ],
                "subnets": world["private_subnets"],
                "podExecutionRoleARN": world["role_arn"],
            },
        )

        # The VPC's DNS hostnames are off: the profile is usable but says why CoreDNS would
        # stay Pending, as a condition and as a warning event.
        async def dns_condition() -> dict[str, Any] | None:
            profile = await custom.get_cluster_custom_object(
                "fargate.vk-fargate.io", "v1", "fargateprofiles", "talk"
            )
            status = profile.get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            if status.get("status") != "ACTIVE" or "VpcDnsReady" not in conditions:
                return None
            return dict(conditions["VpcDnsReady"])

        dns = await waiting.until(dns_condition, what="the VpcDnsReady condition")
        assert dns["status"] == "False" and dns["reason"] == "VpcDnsDisabled"
        assert "enableDnsHostnames" in dns["message"] and world["vpc_id"] in dns["message"]
        events = await core.list_namespaced_event(
            "default", field_selector="involvedObject.name=talk"
        )
        assert any(
            e.reason == "VpcDnsDisabled" and e.type == "Warning" and "CoreDNS" in e.message
            for e in events.items
        )

        # The seed's case: CoreDNS's pods stay Pending, saying why, until the VPC's DNS
        # is on; then they run.
        coredns: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "coredns-probe", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "dns", "image": "busybox", "command": ["sleep", "3600"]}],
            },
        }
        await core.create_namespaced_pod("kube-system", coredns)

        async def held() -> str | None:
            listed = await core.list_namespaced_event(
                "kube-system", field_selector="involvedObject.name=coredns-probe"
            )
            found = [e.message for e in listed.items if e.reason == "FailedScheduling"]
            return found[0] if found else None

        message = await waiting.until(held, what="CoreDNS held Pending")
        assert message.startswith("CoreDNS cannot run on Fargate here: VPC ")
        assert "enableDnsHostnames off" in message and world["vpc_id"] in message
        assert (
            await core.read_namespaced_pod("coredns-probe", "kube-system")
        ).spec.node_name is None
        ec2.modify_vpc_attribute(VpcId=world["vpc_id"], EnableDnsHostnames={"Value": True})

        async def coredns_running() -> bool:
            pod = await core.read_namespaced_pod("coredns-probe", "kube-system")
            return pod.status.phase == "Running"

        await waiting.until(coredns_running, timeout=120, what="CoreDNS Running once DNS is on")
        dns = await waiting.until(dns_condition, what="the VpcDnsReady condition")
        assert dns["status"] == "True"
        await core.delete_namespaced_pod("coredns-probe", "kube-system")

        await waiting.until(lambda: _has_default_sa(core), what="the default ServiceAccount")
        talker: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "talker"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "talk", "image": "busybox", "command": ["sh", "-c", TALK]}],
            },
        }
        await core.create_namespaced_pod(NS, talker)

        async def running() -> k8s.V1Pod | None:
            pod = await core.read_namespaced_pod("talker", NS)
            return pod if pod.status.phase == "Running" else None

        pod = await waiting.until(running, timeout=120, what="the talker Running")
        assert pod.metadata.annotations["Logging"] == "LoggingEnabled"
        stream = f"fargate-talker_{NS}_talk"
        await waiting.until(
            lambda: _at_least(logs, stream, 20), timeout=60, what="20 lines in CloudWatch"
        )
        events = await core.list_namespaced_event(NS, field_selector="involvedObject.name=talker")
        assert any(
            e.reason == "LoggingFiltersNotApplied" and "#2 kubernetes" in e.message
            for e in events.items
        )

        # /metrics counts what was shipped and what the grep filter dropped, by namespace.
        async def counted(outcome: str) -> float | None:
            port = provider.env["VK_FARGATE_METRICS_PORT"]
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as scraped,
            ):
                text = await scraped.text()
            for family in parser.text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "vkfargate_log_events_total" and sample.labels == {
                        "namespace": NS,
                        "outcome": outcome,
                    }:
                        return float(sample.value)
            return None

        shipped = await waiting.until(lambda: counted("shipped"), what="shipped in /metrics")
        assert 20 <= shipped <= 50  # the batch holding lines 1-30, perhaps 31-60 too
        assert await counted("filtered") == 10

        # A restarted provider resumes where CloudWatch's copy ends: nothing twice.
        provider.stop()
        await provider.start()
        await waiting.until(
            lambda: _at_least(logs, stream, 50), timeout=90, what="50 lines in CloudWatch"
        )
        assert _stream(logs, stream) == KEPT
        assert logs.describe_log_groups(logGroupNamePrefix=UNMATCHED)["logGroups"] == []

        # No aws-auth mapping for the pod execution role: the node says so, NotReady.
        node_name = pod.spec.node_name

        async def ready(expected: str) -> dict[str, Any] | None:
            node = await core.read_node(node_name)
            found = {c.type: c for c in node.status.conditions}["Ready"]
            return found.to_dict() if found.status == expected else None

        not_ready = await waiting.until(lambda: ready("False"), what="the node NotReady")
        assert world["role_arn"] in not_ready["message"]
        assert "kube-system/aws-auth" in not_ready["message"]
        assert "system:nodes" in not_ready["message"]
        await core.create_namespaced_config_map(
            "kube-system",
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name="aws-auth"),
                data=iam.with_role_mapped(None, world["role_arn"]),
            ),
        )
        again = await waiting.until(lambda: ready("True"), timeout=60, what="the node Ready")
        assert again["reason"] == "KubeletReady"
        assert _stream(logs, stream) == KEPT
    finally:
        await api.close()
        provider.stop()


async def _has_default_sa(core: k8s.CoreV1Api) -> bool:
    return bool((await core.list_namespaced_service_account(NS)).items)


async def _at_least(logs: Any, stream: str, count: int) -> bool:
    return len(_stream(logs, stream)) >= count
