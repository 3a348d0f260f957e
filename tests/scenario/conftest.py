"""The provider as ``vk-fargate run`` wires it (``app.Provider``: watches, queues,
reconcilers, kubelet API), in this process, against the session's real API server,
with the in-memory fleet of ``fakebackend`` behind its backend seam. One per module:
its pods are for a scheduler of its own (``scenario-scheduler``, selected by its own
profile), its nodes carry a cluster label of their own, and it registers no webhook,
so it never touches what other tests' providers own."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests.provider import conftest as provider_conftest
from tests.scenario import fakebackend
from vk_fargate import app, settings
from vk_fargate.devcluster import cluster
from vk_fargate.k8s import kube

SCHEDULER = "scenario-scheduler"
CLUSTER = "scenario"


# Each module's fleet hands out addresses of its own: a pod another module left behind
# (its namespace still going) keeps its node, and a node name is a pod's address.
_SUBNETS = itertools.count(200)


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[fakebackend.FakeMicroVMs]:
    backend = fakebackend.FakeMicroVMs(subnet=f"10.{next(_SUBNETS) % 250}")
    try:
        yield backend
    finally:
        await backend.close()
    assert not backend.failures, backend.failures


@pytest.fixture(scope="module")
async def provider(
    local_cluster: cluster.Cluster,
    api: k8s.ApiClient,
    fake: fakebackend.FakeMicroVMs,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[app.Provider]:
    cfg = scenario_settings(local_cluster, tmp_path_factory.mktemp("scenario"))
    running = app.Provider(cfg, kube.Kube(api), fakebackend.implements(fake))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def scenario_settings(
    local_cluster: cluster.Cluster, home: Path, **overrides: Any
) -> settings.ProviderSettings:
    """The scenario provider's settings (``overrides`` for a module's own provider)."""
    return settings.ProviderSettings(
        cluster_name=CLUSTER,
        scheduler_name=SCHEDULER,
        kubeconfig=local_cluster.kubeconfig,
        kubelet_bind="127.0.0.1",
        kubelet_port=0,
        kubelet_advertise_address="127.0.0.1",
        kubelet_client_ca_file=local_cluster.layout.pem("ca.crt"),
        webhook_bind="127.0.0.1",
        webhook_port=0,
        webhook_url="https://127.0.0.1:9",
        webhook_register=False,
        metrics_bind="127.0.0.1",
        metrics_port=0,
        install_crd=False,
        profiles_file=provider_conftest.profiles_file(home, SCHEDULER),
        **overrides,
    )
