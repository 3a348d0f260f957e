"""Services and cluster DNS at the backend seam, with the real API server (its
ServiceCIDR, its EndpointSlices) and the in-memory fleet: the table the fleet gets
follows Services and the readiness of their endpoints, as kube-proxy's rules do; a
pod placed while kube-dns exists gets the kubelet's ClusterFirst resolver."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest as provider_conftest
from tests.scenario import conftest, fakebackend, test_races
from vk_fargate import app
from vk_fargate.devcluster import components
from vk_fargate.fleet import models

pytestmark = pytest.mark.e2e
JSON = dict[str, Any]


def endpoint_slice(service: str, ready: dict[str, bool]) -> JSON:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-1", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": up}} for ip, up in sorted(ready.items())
        ],
    }


def port_of(fake: fakebackend.FakeMicroVMs, name: str) -> models.ServicePort | None:
    table = fake.services.get(conftest.CLUSTER)
    return next((p for p in table.ports if p.name == name), None) if table else None


async def test_the_fleet_table_follows_services_and_ready_endpoints(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    discovery = k8s.DiscoveryV1Api(api)
    ns = await provider_conftest.namespace(api, "services")
    web = {
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    created = await core.create_namespaced_service(ns, web)
    ip = created.spec.cluster_ip
    await discovery.create_namespaced_endpoint_slice(
        ns, endpoint_slice("web", {"10.251.0.7": True, "10.251.0.8": False})
    )

    async def endpoints(wanted: list[str]) -> bool:
        port = port_of(fake, f"{ns}/web:http")
        return port is not None and port.endpoints == wanted

    await waiting.until(lambda: endpoints(["10.251.0.7:8080"]), timeout=10, what="one endpoint")
    port = port_of(fake, f"{ns}/web:http")
    assert port is not None and (port.cluster_ip, port.port, port.protocol) == (ip, 80, "TCP")
    # The range is the API server's own (its default ServiceCIDR), not a setting.
    assert fake.services[conftest.CLUSTER].service_cidrs == [components.SERVICE_CIDR]

    await discovery.patch_namespaced_endpoint_slice(
        "web-1", ns, endpoint_slice("web", {"10.251.0.7": True, "10.251.0.8": True})
    )
    await waiting.until(
        lambda: endpoints(["10.251.0.7:8080", "10.251.0.8:8080"]), timeout=10, what="both"
    )
    assert provider.tables.put_seconds < 5.0

    await core.delete_namespaced_service("web", ns)

    async def gone() -> bool:
        return port_of(fake, f"{ns}/web:http") is None

    await waiting.until(gone, timeout=10, what="the Service's rule to go")
    await core.delete_namespace(ns)


async def test_a_pod_placed_while_kube_dns_exists_gets_the_cluster_resolver(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "dns")
    kube_dns = {
        "metadata": {"name": "kube-dns"},
        "spec": {
            "selector": {"k8s-app": "kube-dns-scenario"},
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
        },
    }
    dns_ip = (await core.create_namespaced_service("kube-system", kube_dns)).spec.cluster_ip
    try:
        await waiting.until(
            lambda: _async(provider._dns_cluster().nameservers == (dns_ip,)),
            timeout=10,
            what="the provider to see kube-dns",
        )
        pod = test_races.sleeper(
            "named",
            hostname="db-0",
            subdomain="db",
            hostAliases=[{"ip": "10.9.9.9", "hostnames": ["legacy.local"]}],
        )
        uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
        await test_races.running(api, ns, "named")
    finally:
        await core.delete_namespaced_service("kube-dns", "kube-system")
    spec = fake.given[uid]
    assert spec.dns == models.DNSConfig(
        nameservers=[dns_ip],
        searches=[f"{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        options=["ndots:5"],
    )
    assert (spec.hostname, spec.domain) == ("db-0", f"db.{ns}.svc.cluster.local")
    assert spec.host_aliases == [models.HostAlias(ip="10.9.9.9", hostnames=["legacy.local"])]
    await core.delete_namespace(ns)


async def _async(value: bool) -> bool:
    return value
