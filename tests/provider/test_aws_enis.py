"""An ENI per pod (AWS through moto's server): the pod's IP is its ENI's, node names carry
it, nothing leaks when pods go, and a profile naming a public subnet blocks launches."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate.aws import devaws, network, session
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.devcluster import stack as devstack
from vk_fargate.k8s import client

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "enis"


@pytest.fixture
async def stack(
    control_plane_binaries: binaries.Binaries, tmp_path: Path
) -> AsyncIterator[tuple[cluster.Cluster, devaws.DevAws]]:
    # Free /24s of this machine, not a fixed layout: other fleets may be using 10.0.x.
    aws = await devaws.start(tmp_path / "aws", cluster_name=CLUSTER, layout=devstack.aws_layout())
    try:
        async with cluster.Cluster(control_plane_binaries) as local:
            yield local, aws
    finally:
        aws.stop()


async def _profile(
    api: k8s.ApiClient, name: str, namespace: str, subnets: list[str], role: str
) -> None:
    await conftest.create_profile(
        api,
        name,
        {"selectors": [{"namespace": namespace}], "subnets": subnets, "podExecutionRoleARN": role},
    )


async def test_ten_pods_get_ten_enis_and_leave_none(
    stack: tuple[cluster.Cluster, devaws.DevAws], tmp_path: Path, registry: devregistry.Registry
) -> None:
    local, aws = stack
    world = aws.world
    fleet = await devfleet.start(
        tmp_path / "fleet", subnets=aws.fleet_subnets(), registry=registry.host
    )
    port = processes.free_ports(1)[0]
    env = {**devprovider.environment(local, fleet, port=port, cluster_name=CLUSTER), **aws.env()}
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    api = await client.connect(local.kubeconfig)
    aws_settings = session.AwsSettings(
        enabled=True, region=world["region"], endpoint_url=aws.endpoint_url, cluster_name=CLUSTER
    )
    ec2 = session.make_client(aws_settings, "ec2", credentials=("testing", "testing"))
    try:
        await provider.start()
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        for ns in ("private-web", "public-web"):
            await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        await waiting.until(lambda: conftest.profiles_served(api), what="FargateProfiles served")
        await _profile(api, "private", "private-web", world["private_subnets"], world["role_arn"])
        # One public subnet among the private ones is enough to fail the profile.
        mixed = [*world["private_subnets"], *world["public_subnets"]]
        await _profile(api, "public", "public-web", mixed, world["role_arn"])

        async def accounts() -> bool:
            found = [
                sa
                for ns in ("private-web", "public-web")
                for sa in (await core.list_namespaced_service_account(ns)).items
            ]
            return len(found) >= 2

        await waiting.until(accounts, what="default ServiceAccounts")

        async def decided() -> dict[str, dict[str, Any]] | None:
            listed = await k8s.CustomObjectsApi(api).list_cluster_custom_object(
                "fargate.vk-fargate.io", "v1", "fargateprofiles"
            )
            found = {p["metadata"]["name"]: p.get("status") or {} for p in listed["items"]}
            states = {s.get("status") for s in found.values()}
            return found if states <= {"ACTIVE", "FAILED"} and len(found) == 2 else None

        statuses = await waiting.until(decided, what="both profiles checked against AWS")
        assert statuses["private"]["status"] == "ACTIVE"
        assert statuses["public"]["status"] == "FAILED"
        assert statuses["public"]["message"].startswith(
            f"subnet {world['public_subnets'][0]} is public: route table rtb-"
        )
        dns = {c["type"]: c for c in statuses["private"]["conditions"]}["VpcDnsReady"]
        assert dns["status"] == "True"
        labels = {"app": "web"}
        template = {
            "metadata": {"labels": labels},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": "busybox", "command": ["sleep", "3600"]}],
            },
        }
        await apps.create_namespaced_deployment(
            "private-web",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {"replicas": 10, "selector": {"matchLabels": labels}, "template": template},
            },
        )

        async def ten_running() -> list[k8s.V1Pod] | None:
            pods = [
                p
                for p in (await core.list_namespaced_pod("private-web")).items
                if p.status.phase == "Running"
            ]
            return pods if len(pods) == 10 else None

        pods = await waiting.until(ten_running, timeout=180, what="10 Running pods")
        enis = await network.list_enis(ec2, CLUSTER)
        assert sorted(e.uid for e in enis) == sorted(p.metadata.uid for p in pods)
        described = ec2.describe_network_interfaces(NetworkInterfaceIds=[e.eni_id for e in enis])[
            "NetworkInterfaces"
        ]
        eni_ips = {d["PrivateIpAddress"] for d in described}
        pod_ips = {p.status.pod_ip for p in pods}
        assert len(eni_ips) == 10 and pod_ips == eni_ips
        private = [ipaddress.ip_network(cidr) for cidr, _ in aws.layout.private]
        for pod in pods:
            ip = ipaddress.ip_address(pod.status.pod_ip)
            assert any(ip in net for net in private)
            assert pod.spec.node_name.startswith(
                f"fargate-ip-{pod.status.pod_ip.replace('.', '-')}."
            )

        # The public profile blocks launches with EKS's text.
        pod_body: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nope"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]},
        }
        await core.create_namespaced_pod("public-web", pod_body)

        async def misconfigured() -> str | None:
            events = await core.list_namespaced_event(
                "public-web", field_selector="involvedObject.name=nope"
            )
            found = [e.message for e in events.items if e.reason == "FailedScheduling"]
            return found[0] if found else None

        message = await waiting.until(misconfigured, what="the Misconfigured refusal")
        assert message.startswith(
            "Misconfigured Fargate Profile: fargate profile public "
            "blocked for new launches due to: "
        )
        assert world["public_subnets"][0] in message

        await apps.patch_namespaced_deployment_scale(
            "web", "private-web", {"spec": {"replicas": 0}}
        )

        async def no_enis() -> bool:
            return not await network.list_enis(ec2, CLUSTER)

        await waiting.until(no_enis, timeout=120, what="every ENI deleted")
    finally:
        await api.close()
        provider.stop()
        fleet.stop()
