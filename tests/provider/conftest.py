"""The provider as users run it: `vk-fargate run`, a real process, against the session's
control plane and fleetd."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from vk_fargate.devcluster import cluster, components, processes
from vk_fargate.devcluster import fleet as devfleet

CLUSTER_NAME = "e2e"


def provider_env(
    local_cluster: cluster.Cluster, fleet: devfleet.Fleet, port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "VK_FARGATE_CLUSTER_NAME": CLUSTER_NAME,
        "VK_FARGATE_KUBECONFIG": str(local_cluster.kubeconfig),
        "VK_FARGATE_FLEET_URL": fleet.url,
        "VK_FARGATE_FLEET_TOKEN_FILE": str(fleet.token_file),
        "VK_FARGATE_KUBELET_BIND": "127.0.0.1",
        "VK_FARGATE_KUBELET_PORT": str(port),
        "VK_FARGATE_KUBELET_CLIENT_CA_FILE": str(local_cluster.layout.pem("ca.crt")),
        "VK_FARGATE_LEASE_RENEW_SECONDS": "10",
    }


class Provider:
    """A `vk-fargate run` process that can be killed and started again."""

    def __init__(self, env: dict[str, str], log: Path, port: int) -> None:
        self.env = env
        self.log = log
        self.port = port
        self.process: processes.subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = components.Command(
            "vk-fargate-run",
            (sys.executable, "-m", "vk_fargate.cli", "run"),
            f"https://127.0.0.1:{self.port}/healthz",
            self.log,
        )
        self.process = processes.spawn(command, detach=False, env=self.env)
        await processes.wait_healthy(self.process, command, ssl_context=False, timeout=60)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            processes.stop(self.process.pid, grace=10, child=self.process)
            self.process = None


@pytest.fixture(scope="session")
async def provider(
    local_cluster: cluster.Cluster, fleet: devfleet.Fleet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Provider]:
    port = processes.free_ports(1)[0]
    log = tmp_path_factory.mktemp("provider") / "provider.log"
    running = Provider(provider_env(local_cluster, fleet, port), log, port)
    await running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def kubectl(local_cluster: cluster.Cluster) -> Iterator[list[str]]:
    from vk_fargate.devcluster import binaries

    yield [str(binaries.kubectl_path()), "--kubeconfig", str(local_cluster.kubeconfig)]
