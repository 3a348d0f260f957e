"""The provider as users run it: `vk-fargate run`, a real process, against the session's
control plane and fleetd."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider

CLUSTER_NAME = "e2e"
Provider = devprovider.Provider


@pytest.fixture(scope="session")
async def provider(
    local_cluster: cluster.Cluster, fleet: devfleet.Fleet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[devprovider.Provider]:
    port = processes.free_ports(1)[0]
    env = devprovider.environment(local_cluster, fleet, port=port, cluster_name=CLUSTER_NAME)
    running = devprovider.Provider(env, tmp_path_factory.mktemp("provider") / "provider.log")
    await running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def kubectl(local_cluster: cluster.Cluster) -> list[str]:
    return [str(binaries.kubectl_path()), "--kubeconfig", str(local_cluster.kubeconfig)]
