"""The provider as users run it: `vk-fargate run`, a real process, against the session's
control plane and fleetd."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider

CLUSTER_NAME = "e2e"
Provider = devprovider.Provider
# fargate-scheduler runs only pods a Fargate profile selects. The tests' pods say which
# scheduler they are for in this label, and each provider's profile selects its own.
SCHEDULER_LABEL = "e2e.vk-fargate.io/scheduler"


def profiles_file(directory: Path, scheduler: str = "fargate-scheduler") -> Path:
    """A provider's profiles file: one profile taking the pods labelled for ``scheduler``."""
    path = directory / "profiles.yaml"
    profile = {
        "name": "e2e",
        "selectors": [{"namespace": "*", "labels": {SCHEDULER_LABEL: scheduler}}],
    }
    path.write_text(json.dumps([profile]))
    return path


@pytest.fixture(scope="session")
async def provider(
    local_cluster: cluster.Cluster, fleet: devfleet.Fleet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[devprovider.Provider]:
    port = processes.free_ports(1)[0]
    env = devprovider.environment(local_cluster, fleet, port=port, cluster_name=CLUSTER_NAME)
    home = tmp_path_factory.mktemp("provider")
    env["VK_FARGATE_PROFILES_FILE"] = str(profiles_file(home))
    running = devprovider.Provider(env, home / "provider.log")
    await running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def own_cluster(
    control_plane_binaries: binaries.Binaries,
) -> AsyncIterator[cluster.Cluster]:
    """A control plane of the test's own, for tests that break it or its webhooks."""
    async with cluster.Cluster(control_plane_binaries) as running:
        yield running


@pytest.fixture
def kubectl(local_cluster: cluster.Cluster) -> list[str]:
    return [str(binaries.kubectl_path()), "--kubeconfig", str(local_cluster.kubeconfig)]


async def namespace(api: k8s.ApiClient, prefix: str) -> str:
    """A fresh namespace, once its default ServiceAccount and kube-root-ca.crt exist
    (every pod needs them)."""
    core = k8s.CoreV1Api(api)
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))

    async def default_sa() -> bool:
        accounts = await core.list_namespaced_service_account(name)
        return any(sa.metadata.name == "default" for sa in accounts.items)

    async def root_ca() -> bool:
        maps = await core.list_namespaced_config_map(name)
        return any(m.metadata.name == "kube-root-ca.crt" for m in maps.items)

    await waiting.until(default_sa, what=f"the default ServiceAccount of {name}")
    # Every pod's kube-api-access volume reads it: a pod made before the controller has
    # published it waits in FailedMount, as on any cluster.
    await waiting.until(root_ca, what=f"kube-root-ca.crt in {name}")
    return name


async def profiles_served(api: k8s.ApiClient) -> bool:
    """Whether FargateProfiles are served: a provider installs the CRD as it starts, and
    the API server serves it a moment later."""
    try:
        await k8s.CustomObjectsApi(api).list_cluster_custom_object(
            "fargate.vk-fargate.io", "v1", "fargateprofiles"
        )
    except k8s.ApiException as exc:
        # 404 before the CRD is established; 429 "storage is (re)initializing" just after.
        if exc.status in (404, 429):
            return False
        raise
    return True


async def create_profile(api: k8s.ApiClient, name: str, spec: dict[str, Any]) -> None:
    """Create FargateProfile ``name`` with ``spec`` (selectors, subnets, role)."""
    await k8s.CustomObjectsApi(api).create_cluster_custom_object(
        "fargate.vk-fargate.io",
        "v1",
        "fargateprofiles",
        {
            "apiVersion": "fargate.vk-fargate.io/v1",
            "kind": "FargateProfile",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def for_scheduler(scheduler: str = "fargate-scheduler") -> dict[str, str]:
    """The labels that put a test's pod in the profile of ``scheduler``'s provider."""
    return {SCHEDULER_LABEL: scheduler}


def pod(
    name: str, container: dict[str, Any], scheduler: str = "fargate-scheduler", **spec: Any
) -> dict[str, Any]:
    """A pod for ``scheduler`` with one ``container`` and ``spec``'s other fields."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": for_scheduler(scheduler)},
        "spec": {
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            **spec,
        },
    }


def shell_pod(name: str, script: str, scheduler: str = "fargate-scheduler") -> dict[str, Any]:
    """A pod for ``scheduler`` whose one container (``main``) runs ``sh -c script``."""
    container = {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}
    return pod(name, container, scheduler)
