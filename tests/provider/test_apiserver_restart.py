"""The API server restarts (an upgrade, a crash, a control-plane failover) under a
running provider: the provider rides it out, says not ready on ``/readyz`` meanwhile,
and works on afterwards. On a control plane of its own, since it kills the API server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.k8s import client

pytestmark = pytest.mark.e2e
DOWN_FOR = 12.0  # seconds: longer than a Lease renewal period, so every loop meets it


async def _answers(url: str, status: int) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status == status
    except aiohttp.ClientError:
        return False


async def test_the_provider_rides_out_an_api_server_restart(
    own_cluster: cluster.Cluster, fleet: devfleet.Fleet, tmp_path: Path
) -> None:
    env = devprovider.environment(
        own_cluster, fleet, port=processes.free_ports(1)[0], cluster_name="restart"
    )
    env["VK_FARGATE_PROFILES_FILE"] = str(conftest.profiles_file(tmp_path))
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    readyz = f"http://127.0.0.1:{env['VK_FARGATE_METRICS_PORT']}/readyz"
    await provider.start()
    api = await client.connect(own_cluster.kubeconfig)
    try:
        core = k8s.CoreV1Api(api)
        ns = await conftest.namespace(api, "restart")

        async def running(name: str) -> bool:
            pod = await core.read_namespaced_pod(name, ns)
            return bool(pod.status.phase == "Running")

        await core.create_namespaced_pod(ns, conftest.shell_pod("before", "exec sleep 3600"))
        await waiting.until(lambda: running("before"), timeout=90, what="'before' Running")

        own_cluster.crash("kube-apiserver")
        await waiting.until(lambda: _answers(readyz, 503), what="/readyz to say not ready")
        await asyncio.sleep(DOWN_FOR)
        assert provider.process is not None and provider.process.poll() is None, "it exited"
        await own_cluster.resume("kube-apiserver")
        await waiting.until(lambda: _answers(readyz, 200), what="/readyz to say ready")

        await core.create_namespaced_pod(ns, conftest.shell_pod("after", "exec sleep 3600"))
        await waiting.until(lambda: running("after"), timeout=90, what="'after' Running")
        await core.delete_namespaced_pod("before", ns)

        async def gone() -> bool:
            names = {p.metadata.name for p in (await core.list_namespaced_pod(ns)).items}
            return "before" not in names

        await waiting.until(gone, timeout=60, what="'before' deleted")
        assert provider.process.poll() is None
        log = provider.log.read_text()
        assert "Traceback" not in log, "an outage is logged in lines, not tracebacks"
        warnings = [line for line in log.splitlines() if " WARNING " in line]
        # One line as the outage begins for each loop that met it (three watches, the
        # heartbeats, the budget check, ...), not one per retry; each says it ended.
        assert 3 <= len(warnings) <= 10, "\n".join(warnings)
        assert "informer pods: works again after" in log
    finally:
        provider.stop()
        await api.close()
