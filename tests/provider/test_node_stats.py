"""`/stats/summary` and `/metrics/resource` of a Fargate node, fetched as metrics-server
fetches them: from the node's address and its own kubelet port (the API server's node
proxy refuses loopback addresses, which is all this machine's nodes have). Each node
answers with its own pod's real, changing numbers."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import parser

from tests import waiting
from tests.fleetd import helpers as fleetd_helpers
from tests.provider import conftest
from vk_fargate.devcluster import cluster

pytestmark = pytest.mark.e2e
SPIN = "while :; do :; done"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def _client_tls(local: cluster.Cluster) -> ssl.SSLContext:
    """The admin's client certificate (metrics-server has its own; both are authorized).
    The kubelet's serving certificate is self-signed, as metrics-server is told to accept
    with --kubelet-insecure-tls."""
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    tls.load_cert_chain(local.layout.pem("admin.crt"), local.layout.pem("admin.key"))
    return tls


async def test_each_node_reports_its_own_pod_with_changing_numbers(
    api: k8s.ApiClient, provider: conftest.Provider, local_cluster: cluster.Cluster
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "stats")
    await core.create_namespaced_pod(ns, conftest.shell_pod("spinner", SPIN))
    await core.create_namespaced_pod(ns, conftest.shell_pod("sleeper", "exec sleep 3600"))

    async def running() -> dict[str, k8s.V1Pod] | None:
        pods = {p.metadata.name: p for p in (await core.list_namespaced_pod(ns)).items}
        ready = all(p.status.phase == "Running" for p in pods.values())
        return pods if len(pods) == 2 and ready else None

    pods = await waiting.until(running, timeout=90, what="both pods Running")
    spinner, sleeper = pods["spinner"].spec.node_name, pods["sleeper"].spec.node_name
    urls = {}
    for name in (spinner, sleeper):
        status = (await core.read_node(name)).status
        host = next(a.address for a in status.addresses if a.type == "Hostname")
        urls[name] = f"https://{host}:{status.daemon_endpoints.kubelet_endpoint.port}"
    assert len(set(urls.values())) == 2 and provider.url not in urls.values()
    tls = _client_tls(local_cluster)

    async with aiohttp.ClientSession() as http:

        async def get(url: str) -> tuple[int, str]:
            async with http.get(url, ssl=tls) as response:
                return response.status, await response.text()

        async def summary(name: str) -> dict[str, Any]:
            status, text = await get(f"{urls[name]}/stats/summary")
            assert status == 200, text
            document: dict[str, Any] = json.loads(text)
            return document

        first = await summary(spinner)
        assert first["node"]["nodeName"] == spinner
        [pod] = first["pods"]
        assert pod["podRef"] == {
            "name": "spinner",
            "namespace": ns,
            "uid": pods["spinner"].metadata.uid,
        }
        assert first["node"]["memory"]["workingSetBytes"] > 0
        await asyncio.sleep(2)
        second = await summary(spinner)
        cpu = [d["node"]["cpu"]["usageCoreNanoSeconds"] for d in (first, second)]
        assert cpu[1] - cpu[0] > 100_000_000  # spinning for 2 s at up to 0.25 vCPU
        assert second["node"]["cpu"]["usageNanoCores"] > 0
        [container] = second["pods"][0]["containers"]
        assert container["name"] == "main" and container["cpu"]["usageCoreNanoSeconds"] > 0
        assert second["node"]["memory"]["availableBytes"] > 0

        # The other node's summary is the other pod's, not this one's.
        [other] = (await summary(sleeper))["pods"]
        assert other["podRef"]["name"] == "sleeper"

        # The pod's eth0: datagrams sent to its IP (on fleetd's bridge) show as received.
        ip = pods["sleeper"].status.pod_ip
        assert fleetd_helpers.route_via_bridge(ip)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(20):
                udp.sendto(b"x" * 1000, (ip, 9))
        await asyncio.sleep(0.5)
        third = await summary(sleeper)
        network = third["pods"][0]["network"]
        assert network["name"] == "eth0" and network["interfaces"][0]["name"] == "eth0"
        assert network["rxBytes"] - other["network"]["rxBytes"] >= 20 * 1000
        assert third["node"]["network"] == network

        # /metrics/resource: the Prometheus text metrics-server reads.
        async def metrics(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
            status, text = await get(f"{urls[name]}/metrics/resource")
            assert status == 200, text
            return _samples(text)

        labels = (("container", "main"), ("namespace", ns), ("pod", "spinner"))
        before = await metrics(spinner)
        await asyncio.sleep(2)
        after = await metrics(spinner)
        key = ("container_cpu_usage_seconds_total", labels)
        assert after[key].value > before[key].value > 0
        assert after[key].timestamp is not None
        assert after[("container_memory_working_set_bytes", labels)].value > 0
        assert after[("node_memory_working_set_bytes", ())].value > 0
        assert ("container_start_time_seconds", labels) in after
        assert not any(s.labels.get("pod") == "sleeper" for s in after.values())

        # /pods on a node's port lists that node's pod only; the provider's port, all.
        status, text = await get(f"{urls[spinner]}/pods")
        assert [p["metadata"]["name"] for p in json.loads(text)["items"]] == ["spinner"]
        status, text = await get(f"{provider.url}/pods")
        assert {"spinner", "sleeper"} <= {p["metadata"]["name"] for p in json.loads(text)["items"]}

        # The provider's own port names no node: it says where to ask instead.
        status, text = await get(f"{provider.url}/stats/summary")
        assert status == 404 and "daemonEndpoints" in text

    await core.delete_namespace(ns)

    async def ports_closed() -> bool:
        for url in urls.values():
            host, port = url.removeprefix("https://").rsplit(":", 1)
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                continue
            writer.close()
            return False
        return True

    await waiting.until(ports_closed, timeout=60, what="the nodes' ports closed with them")


async def test_a_node_whose_port_is_taken_at_restart_moves_to_a_new_one(
    api: k8s.ApiClient, provider: conftest.Provider, local_cluster: cluster.Cluster
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "rehome")
    await core.create_namespaced_pod(ns, conftest.shell_pod("mover", "exec sleep 3600"))

    async def running() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("mover", ns)
        return pod if pod.status.phase == "Running" else None

    node_name = (await waiting.until(running, timeout=90, what="mover Running")).spec.node_name

    async def port() -> int:
        node = await core.read_node(node_name)
        return int(node.status.daemon_endpoints.kubelet_endpoint.port)

    old = await port()
    provider.stop()
    squatter = socket.socket()  # someone else took the node's port while we were down
    try:
        squatter.bind(("127.0.0.1", old))
        squatter.listen()
        await provider.start()

        async def moved() -> int | None:
            new = await port()
            return new if new != old else None

        new = await waiting.until(moved, timeout=60, what="the node moved to a free port")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"https://127.0.0.1:{new}/stats/summary", ssl=_client_tls(local_cluster)
            ) as response,
        ):
            assert response.status == 200, await response.text()
            [pod] = (await response.json())["pods"]
            assert pod["podRef"]["name"] == "mover"
    finally:
        squatter.close()
    await core.delete_namespace(ns)
