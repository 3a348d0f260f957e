"""The whole local stack behind `vk-fargate dev up`: control plane, fleetd, provider.

Everything is started detached (it outlives `dev up`) and recorded in the state file
as one component each, so `dev status` and `dev down` see and stop all of it, last
started first. A failing step stops what the earlier steps started.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vk_fargate.devcluster import binaries, cluster, processes, state
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider

CLUSTER_NAME = "vk-fargate-dev"
Progress = Callable[[str], None]


def _component(pid: int, url: str, log: Path, grace: float) -> dict[str, Any]:
    return {"pid": pid, "url": url, "log": str(log), "program": sys.executable, "grace": grace}


async def up(bins: binaries.Binaries, root: Path, progress: Progress) -> dict[str, Any]:
    """Start the stack under ``root``; its status (also saved as the state file)."""
    began = time.monotonic()
    local = cluster.Cluster(bins, root=root, detach=True, keep_files=True)
    await local.start(progress=progress)
    status = local.status()
    state.save(root, status)
    try:
        progress("starting fleetd (the reference bare-metal fleet)")
        fleet = await devfleet.start(root / "fleet", detach=True)
        status["components"]["fleetd"] = _component(fleet.process.pid, fleet.url, fleet.log, 60)
        status["fleet"] = {"url": fleet.url, "token_file": str(fleet.token_file)}
        state.save(root, status)
        progress(f"fleetd serving the fleet API at {fleet.url}")
        progress("starting the provider (vk-fargate run)")
        port = processes.free_ports(1)[0]
        env = devprovider.environment(local, fleet, port=port, cluster_name=CLUSTER_NAME)
        env["VK_FARGATE_NAMESPACE"] = "vk-fargate"
        provider = devprovider.Provider(env, root / "logs" / "provider.log", detach=True)
        await provider.start()
        assert provider.process is not None
        status["components"]["provider"] = _component(
            provider.process.pid, provider.url, provider.log, 20
        )
        status["provider"] = {"kubelet_url": provider.url, "cluster_name": CLUSTER_NAME}
        state.save(root, status)
        progress(f"provider serving the kubelet API at {provider.url}")
    except BaseException:
        state.stop_all(status)
        raise
    progress(f"stack ready in {time.monotonic() - began:.1f}s at {local.server}")
    return status
