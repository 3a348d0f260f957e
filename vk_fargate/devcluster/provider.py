"""`vk-fargate run` as a process of the local stack (demo and tests), wired to the
local control plane and fleetd through its environment, like a Deployment's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vk_fargate.devcluster import cluster, components, processes
from vk_fargate.devcluster import fleet as devfleet


def environment(
    local: cluster.Cluster | Path,
    fleet: devfleet.Fleet,
    *,
    port: int,
    cluster_name: str,
    webhook_port: int | None = None,
) -> dict[str, str]:
    """``VK_FARGATE_*`` settings for a provider of ``local`` (a Cluster or its root)."""
    layout = local.layout if isinstance(local, cluster.Cluster) else components.Layout(local)
    if webhook_port is None:
        webhook_port = next(p for p in processes.free_ports(2) if p != port)
    metrics_port = next(p for p in processes.free_ports(3) if p not in (port, webhook_port))
    return {
        **os.environ,
        "VK_FARGATE_CLUSTER_NAME": cluster_name,
        "VK_FARGATE_KUBECONFIG": str(layout.kubeconfig),
        "VK_FARGATE_FLEET_URL": fleet.url,
        "VK_FARGATE_FLEET_TOKEN_FILE": str(fleet.token_file),
        "VK_FARGATE_KUBELET_BIND": "127.0.0.1",
        "VK_FARGATE_KUBELET_PORT": str(port),
        "VK_FARGATE_KUBELET_ADVERTISE_ADDRESS": "127.0.0.1",
        "VK_FARGATE_KUBELET_CLIENT_CA_FILE": str(layout.pem("ca.crt")),
        # A blocked patch eviction is retried after this long (Fargate: minutes).
        "VK_FARGATE_EVICTION_RETRY_SECONDS": "5",
        "VK_FARGATE_BUDGET_CHECK_SECONDS": "5",
        # The API server calls the webhooks on loopback (no Service without a cluster network).
        "VK_FARGATE_WEBHOOK_BIND": "127.0.0.1",
        "VK_FARGATE_WEBHOOK_PORT": str(webhook_port),
        "VK_FARGATE_WEBHOOK_URL": f"https://127.0.0.1:{webhook_port}",
        "VK_FARGATE_METRICS_BIND": "127.0.0.1",
        "VK_FARGATE_METRICS_PORT": str(metrics_port),
    }


def profiles_file(directory: Path, namespace: str, *, name: str = "fargate") -> Path:
    """A profiles file (``VK_FARGATE_PROFILES_FILE``) whose one profile selects every
    pod of ``namespace``: fargate-scheduler runs only pods a profile selects."""
    path = directory / "profiles.json"
    path.write_text(json.dumps([{"name": name, "selectors": [{"namespace": namespace}]}]))
    return path


class Provider:
    """A `vk-fargate run` process that can be killed and started again."""

    def __init__(self, env: dict[str, str], log: Path, *, detach: bool = False) -> None:
        self.env = env
        self.log = log
        self.port = int(env["VK_FARGATE_KUBELET_PORT"])
        self.detach = detach
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        """Its /readyz: webhooks registered, watches synced; not merely serving the
        kubelet API, which comes first."""
        metrics_port = self.env.get("VK_FARGATE_METRICS_PORT")
        return f"http://127.0.0.1:{metrics_port}/readyz" if metrics_port else f"{self.url}/healthz"

    async def start(self) -> None:
        """Start it and wait until it is ready (``ready_url``)."""
        command = components.Command(
            "vk-fargate-run",
            (sys.executable, "-m", "vk_fargate.cli", "run"),
            self.ready_url,
            self.log,
        )
        self.process = processes.spawn(command, detach=self.detach, env=self.env)
        await processes.wait_healthy(self.process, command, ssl_context=False, timeout=90)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            processes.stop(self.process.pid, grace=15, child=self.process)
            self.process = None
