"""The local control plane is a real cluster: controllers run, RBAC and kubectl work."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from vk_fargate.devcluster import binaries

pytestmark = pytest.mark.e2e


def _deployment(name: str) -> k8s.V1Deployment:
    labels = {"app": name}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="nginx", image="nginx")]),
            ),
        ),
    )


async def test_server_reports_the_pinned_version(api: k8s.ApiClient) -> None:
    info = await k8s.VersionApi(api).get_code()
    assert info.git_version == binaries.KUBERNETES_VERSION


async def test_deployment_makes_replicaset_and_pod_and_namespace_gets_default_sa(
    api: k8s.ApiClient,
) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))

    async def default_sa() -> bool:
        accounts = await core.list_namespaced_service_account(ns)
        return any(sa.metadata.name == "default" for sa in accounts.items)

    await waiting.until(default_sa, what="the default ServiceAccount")

    await apps.create_namespaced_deployment(ns, _deployment("simple-web"))

    async def replicaset() -> list[k8s.V1ReplicaSet]:
        return (await apps.list_namespaced_replica_set(ns, label_selector="app=simple-web")).items

    sets = await waiting.until(replicaset, what="a ReplicaSet")
    assert sets[0].metadata.owner_references[0].name == "simple-web"

    async def pods() -> list[k8s.V1Pod]:
        return (await core.list_namespaced_pod(ns, label_selector="app=simple-web")).items

    found = await waiting.until(pods, what="a Pod")
    assert found[0].metadata.owner_references[0].kind == "ReplicaSet"
    # The service-account admission plugin and token controller ran on it.
    assert found[0].spec.service_account_name == "default"

    async def root_ca() -> k8s.V1ConfigMap | None:
        maps = await core.list_namespaced_config_map(
            ns, field_selector="metadata.name=kube-root-ca.crt"
        )
        return maps.items[0] if maps.items else None

    await waiting.until(root_ca, what="the kube-root-ca.crt ConfigMap")

    await core.delete_namespace(ns)

    async def namespace_gone() -> bool:
        names = [n.metadata.name for n in (await core.list_namespace()).items]
        return ns not in names

    await waiting.until(namespace_gone, timeout=90, what=f"namespace {ns} to finish deleting")


def test_kubectl_from_the_wheel_talks_to_the_cluster(kubeconfig: Path) -> None:
    done = subprocess.run(
        [str(binaries.kubectl_path()), "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    versions = json.loads(done.stdout)
    server_minor = int(versions["serverVersion"]["minor"])
    client_minor = int(versions["clientVersion"]["minor"])
    assert abs(server_minor - client_minor) <= 1


def test_rbac_is_enforced_for_components(kubeconfig: Path) -> None:
    """The scheduler's identity may not delete namespaces: authorization is real."""
    done = subprocess.run(
        [
            str(binaries.kubectl_path()),
            "--kubeconfig",
            str(kubeconfig),
            "auth",
            "can-i",
            "delete",
            "namespaces",
            "--as=system:kube-scheduler",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.strip() == "no"
