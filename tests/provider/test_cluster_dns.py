"""Services and cluster DNS for Fargate pods, end to end on a cluster of its own: the
seed's "CoreDNS Pending" case, then CoreDNS on Fargate answering a Fargate client that
reaches a Deployment through its Service by name, over UDP (DNS) and TCP (HTTP),
spread over every replica and following a scale-down within seconds, and a headless
Service by DNS alone; an address of the
Service range that no Service holds fails at once and sends nothing to the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import kubectl, waiting
from tests.provider import conftest
from vk_fargate.devcluster import binaries, cluster, clusterdns, components, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.k8s import client

pytestmark = pytest.mark.e2e
CLUSTER = "dns-e2e"
NS = "shop"
UNASSIGNED = "10.96.0.222"  # in the Service range; no Service is given it


@pytest.fixture(scope="module")
async def dns_cluster(
    control_plane_binaries: binaries.Binaries,
    fleet: devfleet.Fleet,
    coredns_binary: Path | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[cluster.Cluster, k8s.ApiClient]]:
    """A control plane of its own (its kube-system is this module's), and a provider."""
    assert coredns_binary is not None, "CoreDNS is not built (hack/coredns/build.sh)"
    home = tmp_path_factory.mktemp("dns")
    async with cluster.Cluster(control_plane_binaries) as local:
        env = devprovider.environment(
            local, fleet, port=processes.free_ports(1)[0], cluster_name=CLUSTER
        )
        provider = devprovider.Provider(env, home / "provider.log")
        await provider.start()
        api = await client.connect(local.kubeconfig)
        try:
            await waiting.until(lambda: conftest.profiles_served(api), what="profiles served")
            yield local, api
        finally:
            await api.close()
            provider.stop()


async def _kubectl(local: cluster.Cluster, *args: str) -> tuple[int, str, str]:
    code, out, err = await kubectl.run_async(local.kubeconfig, *args, timeout=90)
    return code, out.decode(), err


async def _events(core: k8s.CoreV1Api, ns: str, name: str, reason: str) -> list[Any]:
    listed = await core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return [e for e in listed.items if e.reason == reason]


async def _ready_pods(core: k8s.CoreV1Api, ns: str, selector: str, count: int) -> list[Any]:
    async def ready() -> list[Any] | None:
        listed = await core.list_namespaced_pod(ns, label_selector=selector)
        found = [
            p
            for p in listed.items
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return found if len(found) == count and len(listed.items) == count else None

    return await waiting.until(ready, timeout=180, what=f"{count} ready pods {selector}")


async def test_coredns_stays_pending_without_its_profile_then_runs_on_fargate(
    dns_cluster: tuple[cluster.Cluster, k8s.ApiClient],
) -> None:
    local, api = dns_cluster
    core = k8s.CoreV1Api(api)
    # The seed's case: the add-on without a Fargate profile for kube-system.
    code, _, err = await _kubectl(local, "apply", "-f", str(clusterdns.COREDNS))
    assert code == 0, err

    async def pending_message() -> str | None:
        listed = await core.list_namespaced_pod("kube-system", label_selector=clusterdns.SELECTOR)
        for pod in listed.items:
            found = await _events(core, "kube-system", pod.metadata.name, "FailedScheduling")
            if found and pod.status.phase == "Pending":
                return str(found[0].message)
        return None

    message = await waiting.until(pending_message, what="CoreDNS Pending, saying why")
    assert "nodes are available" in message or "no nodes available" in message, message

    # The profile, then a restart of the Deployment (pods are steered when created).
    await clusterdns.deploy(local.kubeconfig)
    code, _, err = await _kubectl(
        local, "-n", "kube-system", "rollout", "restart", "deployment/coredns"
    )
    assert code == 0, err
    ready = await _ready_pods(core, "kube-system", clusterdns.SELECTOR, 2)
    assert all(p.spec.node_name.startswith("fargate-ip-") for p in ready)
    assert all(p.spec.scheduler_name == "fargate-scheduler" for p in ready)
    assert len({p.spec.node_name for p in ready}) == 2


@pytest.fixture(scope="module")
async def shop(
    dns_cluster: tuple[cluster.Cluster, k8s.ApiClient],
) -> AsyncIterator[tuple[str, list[str]]]:
    """Namespace ``shop`` on Fargate: Deployment ``web`` (3 nginx, ready when serving)
    behind Service ``web``, and a busybox ``client``. Yields the Service's ClusterIP
    and the web pods' names."""
    _, api = dns_cluster
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    await core.create_namespace({"metadata": {"name": NS}})
    await conftest.create_profile(api, "shop", {"selectors": [{"namespace": NS}]})

    async def active() -> bool:
        profile = await k8s.CustomObjectsApi(api).get_cluster_custom_object(
            "fargate.vk-fargate.io", "v1", "fargateprofiles", "shop"
        )
        return (profile.get("status") or {}).get("status") == "ACTIVE"

    await waiting.until(active, what="the shop profile ACTIVE")
    await waiting.until(lambda: _has_sa(core), what="the default ServiceAccount of shop")
    web = {
        "name": "web",
        "image": "nginx",
        "ports": [{"containerPort": 80}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
    }
    await apps.create_namespaced_deployment(
        NS,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [web]},
                },
            },
        },
    )
    service = await core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
        },
    )
    headless = {
        "metadata": {"name": "web-pods"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    await core.create_namespaced_service(NS, headless)
    client_pod = {
        "metadata": {"name": "client"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "sh", "image": "busybox", "command": ["sleep", "3600"]}],
        },
    }
    await core.create_namespaced_pod(NS, client_pod)
    pods = await _ready_pods(core, NS, "app=web", 3)
    await _ready_pods(core, NS, "", 4)
    yield service.spec.cluster_ip, sorted(p.metadata.name for p in pods)
    await core.delete_namespace(NS)


async def _has_sa(core: k8s.CoreV1Api) -> bool:
    return bool((await core.list_namespaced_service_account(NS)).items)


async def _diagnosis(local: cluster.Cluster) -> str:
    """What a failed lookup's assertion shows: kube-dns's endpoints and the client's rules."""
    _, slices, _ = await _kubectl(
        local, "-n", "kube-system", "get", "endpointslices", "-l",
        "kubernetes.io/service-name=kube-dns", "-o", "yaml",
    )  # fmt: skip
    _, pods, _ = await _kubectl(local, "-n", "kube-system", "get", "pods", "-o", "wide")
    _, uid, _ = await _kubectl(
        local, "-n", NS, "get", "pod", "client", "-o", "jsonpath={.metadata.uid}"
    )
    spaces = [n.name for n in Path("/run/netns").iterdir() if n.name.endswith(uid)]
    rules = await asyncio.to_thread(
        subprocess.run,
        ["ip", "netns", "exec", spaces[0], "iptables-save"] if spaces else ["true"],
        capture_output=True,
        text=True,
    )
    text = f"{pods}\n{slices}\n{rules.stdout}"
    print(text)
    return text


async def _exec(local: cluster.Cluster, script: str) -> tuple[int, str, str]:
    return await _kubectl(local, "-n", NS, "exec", "client", "--", "sh", "-c", script)


async def _served(local: cluster.Cluster, pods: list[str]) -> dict[str, int]:
    """How many requests each web pod's nginx has logged (its access log is stdout)."""
    counts = {}
    for name in pods:
        code, out, _ = await _kubectl(local, "-n", NS, "logs", name, "-c", "web")
        counts[name] = len(re.findall(r'"GET /\?n=\d+ HTTP', out)) if code == 0 else -1
    return counts


async def _requests(local: cluster.Cluster, count: int, url: str) -> None:
    script = f"for i in $(seq {count}); do wget -q -O /dev/null '{url}?n='$i || echo FAIL; done"
    code, out, err = await _exec(local, script)
    assert (code, out) == (0, ""), err


async def test_a_fargate_client_resolves_names_and_reaches_every_replica(
    dns_cluster: tuple[cluster.Cluster, k8s.ApiClient], shop: tuple[str, list[str]]
) -> None:
    local, api = dns_cluster
    cluster_ip, pods = shop
    code, resolv, err = await _exec(local, "cat /etc/resolv.conf")
    assert code == 0, err
    assert resolv == (
        f"search {NS}.svc.cluster.local svc.cluster.local cluster.local\n"
        f"nameserver {clusterdns.service_ip()}\n"
        "options ndots:5\n"
    )
    # Over UDP, through the kube-dns Service to CoreDNS on Fargate.
    code, out, err = await _exec(local, f"nslookup web.{NS}.svc.cluster.local")
    assert code == 0 and f"Address: {cluster_ip}" in out, (out, err, await _diagnosis(local))
    kubernetes_ip = str(ipaddress.ip_network(components.SERVICE_CIDR)[1])
    code, out, err = await _exec(local, "nslookup kubernetes.default.svc.cluster.local")
    assert code == 0 and f"Address: {kubernetes_ip}" in out, (out, err)
    # A short name through the C library's resolver, its search path and ndots:5
    # (busybox's nslookup asks for the name as given, which CoreDNS forwards upstream).
    code, out, err = await _exec(local, "ping -c 1 -W 1 kubernetes.default 2>&1 | head -1")
    assert out.startswith(f"PING kubernetes.default ({kubernetes_ip})"), (out, err)

    # A headless Service is DNS's alone: CoreDNS answers every ready pod's address.
    code, out, err = await _exec(local, f"nslookup web-pods.{NS}.svc.cluster.local")
    listed = await k8s.CoreV1Api(api).list_namespaced_pod(NS, label_selector="app=web")
    assert code == 0 and all(f"Address: {p.status.pod_ip}" in out for p in listed.items), out

    await _requests(local, 60, "http://web/")
    counts = await _served(local, pods)
    assert sum(counts.values()) == 60, counts
    assert all(n > 0 for n in counts.values()), counts  # spread over all three


async def test_scaling_down_stops_traffic_to_the_removed_pods_within_5s(
    dns_cluster: tuple[cluster.Cluster, k8s.ApiClient], shop: tuple[str, list[str]]
) -> None:
    local, api = dns_cluster
    _, pods = shop
    apps = k8s.AppsV1Api(api)
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 1}})
    await asyncio.sleep(5)
    listed = await k8s.CoreV1Api(api).list_namespaced_pod(NS, label_selector="app=web")
    kept = [p.metadata.name for p in listed.items if p.metadata.deletion_timestamp is None]
    assert len(kept) == 1 and kept[0] in pods
    before = (await _served(local, kept))[kept[0]]
    await _requests(local, 20, f"http://web.{NS}.svc.cluster.local/")
    assert (await _served(local, kept))[kept[0]] == before + 20


@contextlib.contextmanager
def _host_counters(cidr: str) -> Iterator[list[int]]:
    """Count, on the host, packets for ``cidr`` arriving from anywhere (raw PREROUTING)
    or leaving by any interface (mangle POSTROUTING): rules with no target count only."""
    rules = [("raw", "PREROUTING"), ("mangle", "POSTROUTING")]
    for table, chain in rules:
        subprocess.run(["iptables", "-t", table, "-I", chain, "-d", cidr], check=True)
    counted: list[int] = []
    try:
        yield counted
    finally:
        for table, chain in rules:
            listed = subprocess.run(
                ["iptables", "-t", table, "-L", chain, "-v", "-x", "-n"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            line = next(row for row in listed.splitlines() if f" {cidr} " in f" {row} ")
            counted.append(int(line.split()[0]))
            subprocess.run(["iptables", "-t", table, "-D", chain, "-d", cidr], check=True)


async def test_an_unassigned_cluster_ip_fails_fast_and_nothing_reaches_the_host(
    dns_cluster: tuple[cluster.Cluster, k8s.ApiClient], shop: tuple[str, list[str]]
) -> None:
    local, _ = dns_cluster
    route = await asyncio.to_thread(
        subprocess.run, ["ip", "route", "get", UNASSIGNED], capture_output=True, text=True
    )
    assert route.returncode != 0 or route.stdout.startswith("unreachable"), route.stdout
    with _host_counters(components.SERVICE_CIDR) as counted:
        start = time.monotonic()
        code, out, _ = await _exec(
            local, f"timeout 5 wget -q -O- http://{UNASSIGNED}/ 2>&1; echo exit=$?"
        )
        took = time.monotonic() - start
    assert code == 0 and "exit=1" in out, out
    assert took < 3.0, f"{took:.1f}s: the connect was not refused at once ({out})"
    assert counted == [0, 0], counted
