"""A Fargate node's ``/metrics/resource`` as metrics-server itself reads it.

hack/metricscheck is metrics-server v0.8.0's own kubelet client (its
``resource.NewForConfig(...).GetMetrics``, configured by its own ``--kubelet-*`` flags):
it finds the node's address and port as metrics-server does with
``--kubelet-preferred-address-types=Hostname --kubelet-use-node-status-port
--kubelet-insecure-tls``, scrapes, and decodes with metrics-server's parser, which
silently drops node and container points it finds incomplete. What it prints is what
metrics-server would store; with ``--scrapes=2`` the batches also go through
metrics-server's storage, which gives the usage ``kubectl top`` would show.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import gobuild, waiting
from tests.provider import conftest
from vk_fargate.devcluster import binaries, cluster
from vk_fargate.fargate import quantities

pytestmark = pytest.mark.e2e
SPIN = "while :; do :; done"


@pytest.fixture(scope="session")
def metricscheck() -> Path:
    """A cold build downloads and compiles metrics-server's dependencies (about 4 minutes
    on two cores); the cached binary is reused after that."""
    return gobuild.checker("metricscheck", timeout=1200)


async def _run(*command: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _time(text: str | None) -> datetime.datetime:
    assert text is not None, "metrics-server has no time here"
    return datetime.datetime.fromisoformat(text)


async def test_metrics_server_decodes_a_fargate_node(
    api: k8s.ApiClient,
    provider: conftest.Provider,
    local_cluster: cluster.Cluster,
    metricscheck: Path,
    tmp_path: Path,
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "msdecode")
    try:
        await core.create_namespaced_pod(ns, conftest.shell_pod("spinner", SPIN))

        async def running() -> k8s.V1Pod | None:
            pod = await core.read_namespaced_pod("spinner", ns)
            return pod if pod.status.phase == "Running" else None

        pod = await waiting.until(running, timeout=90, what="the spinner Running")
        node_name = pod.spec.node_name
        kubectl = [str(binaries.kubectl_path()), "--kubeconfig", str(local_cluster.kubeconfig)]
        code, text, err = await _run(*kubectl, "get", "node", node_name, "-o", "json")
        assert code == 0, err
        node_file = tmp_path / "node.json"
        node_file.write_text(text)
        node = json.loads(text)
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        # The node's own port, not the provider's.
        assert port and port != provider.port

        checker = [
            str(metricscheck),
            f"--node={node_file}",
            "--kubelet-insecure-tls",
            "--kubelet-use-node-status-port",
            "--kubelet-preferred-address-types=Hostname",
            f"--kubelet-client-certificate={local_cluster.layout.pem('admin.crt')}",
            f"--kubelet-client-key={local_cluster.layout.pem('admin.key')}",
            "-v=1",  # klog says on stderr why metrics-server drops a point
        ]

        async def scrape(*extra: str) -> dict[str, Any]:
            code, out, err = await _run(*checker, *extra)
            assert code == 0, err
            result: dict[str, Any] = json.loads(out)
            result["stderr"] = err
            return result

        async def one_batch() -> dict[str, Any]:
            result = await scrape()
            batch: dict[str, Any]
            [batch] = result["batches"]
            batch["stderr"] = result["stderr"]
            return batch

        first = await one_batch()
        await asyncio.sleep(2)
        second = await one_batch()
        now = datetime.datetime.now(datetime.UTC)
        started = pod.status.container_statuses[0].state.running.started_at

        for batch in (first, second):
            # metrics-server keeps a node point only with a timestamp, CPU and memory.
            assert set(batch["nodes"]) == {node_name}, batch["stderr"]
            point = batch["nodes"][node_name]
            assert point["cumulativeCPUUsed"] > 0 and point["memoryUsage"] > 0
            # The node's pod, with its one container; a container point missing CPU or
            # memory would have dropped the whole pod.
            pods = [(p["namespace"], p["name"]) for p in batch["pods"]]
            assert pods == [(ns, "spinner")], batch["stderr"]
            [(container, point)] = batch["pods"][0]["containers"].items()
            assert container == "main"
            assert point["memoryUsage"] > 0 and point["cumulativeCPUUsed"] > 0
            # Sample timestamps are milliseconds to metrics-server, start times seconds: both
            # must land near now, and the start where the pod's status puts it.
            stamp, start = _time(point["timestamp"]), _time(point["startTime"])
            assert (
                now - datetime.timedelta(seconds=60) < stamp <= now + datetime.timedelta(seconds=5)
            )
            assert abs((start - started).total_seconds()) < 2, (start, started)
            assert start < stamp

        # Two scrapes 2 s apart: later timestamps, more CPU (spinning for 2 s at up to
        # 0.25 vCPU), or metrics-server's storage would refuse to compute a rate from them.
        pairs = {
            "node": [batch["nodes"][node_name] for batch in (first, second)],
            "container": [batch["pods"][0]["containers"]["main"] for batch in (first, second)],
        }
        for what, (a, b) in pairs.items():
            assert _time(b["timestamp"]) > _time(a["timestamp"]), (what, a, b)
            assert b["cumulativeCPUUsed"] - a["cumulativeCPUUsed"] > 100_000_000, (what, a, b)

        # Through metrics-server's storage: the usage the Metrics API would serve.
        served = await scrape("--scrapes=2", "--interval=2s")
        [node_usage] = served["nodeMetrics"]
        assert node_usage["name"] == node_name
        assert quantities.parse(node_usage["usage"]["cpu"]) > quantities.parse("50m"), node_usage
        assert quantities.parse(node_usage["usage"]["memory"]) > 0
        [pod_usage] = served["podMetrics"]
        assert (pod_usage["namespace"], pod_usage["name"]) == (ns, "spinner")
        assert set(pod_usage["containers"]) == {"main"}, served["stderr"]
        cpu = quantities.parse(pod_usage["containers"]["main"]["cpu"])
        assert cpu > quantities.parse("50m"), pod_usage
    finally:
        await core.delete_namespace(ns)
