"""The cluster's ClusterIP Services as the table kube-proxy would program."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from vk_fargate.fargate import services
from vk_fargate.fleet import models

CIDRS = ["10.96.0.0/24"]


def service(name: str, ip: str | None, *ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": list(ports), **spec}
    if ip is not None:
        body["clusterIP"] = ip
    return {"metadata": {"namespace": "shop", "name": name}, "spec": body}


def endpoint_slice(
    name: str, ports: list[dict[str, Any]], *endpoints: tuple[str, bool | None]
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "name": f"{name}-x",
            "labels": {services.SERVICE_NAME_LABEL: name},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [
            {"addresses": [ip], **({} if ready is None else {"conditions": {"ready": ready}})}
            for ip, ready in endpoints
        ],
    }


def table(svcs: list[dict[str, Any]], slices: list[dict[str, Any]]) -> Any:
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for s in slices:
        for owner in services.slice_owner(s):
            by_owner.setdefault(owner, []).append(s)
    return services.table(svcs, lambda owner: by_owner.get(owner, []), CIDRS)


def test_ready_endpoints_of_the_named_port_and_protocol_only() -> None:
    web = service(
        "web",
        "10.96.0.50",
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    )
    slices = [
        endpoint_slice(
            "web",
            [{"name": "http", "port": 8080, "protocol": "TCP"}],
            ("192.168.0.12", True),
            ("192.168.0.9", None),  # no condition: ready, as the API says
            ("192.168.0.7", False),
        ),
        endpoint_slice(
            "web", [{"name": "dns", "port": 5353, "protocol": "UDP"}], ("192.168.0.9", True)
        ),
    ]
    found = table([web], slices)
    assert [(p.name, p.port, p.protocol, p.endpoints) for p in found.ports] == [
        ("shop/web:http", 80, "TCP", ["192.168.0.9:8080", "192.168.0.12:8080"]),
        ("shop/web:dns", 53, "UDP", ["192.168.0.9:5353"]),
    ]
    assert found.service_cidrs == CIDRS


def test_a_service_with_no_ready_endpoint_is_listed_with_none() -> None:
    web = service("web", "10.96.0.50", {"port": 80})
    slices = [endpoint_slice("web", [{"port": 80}], ("192.168.0.7", False))]
    (port,) = table([web], slices).ports
    assert port.endpoints == []  # refused in the pod, as kube-proxy's REJECT


def test_headless_external_name_kubernetes_and_sctp_get_no_rule() -> None:
    found = table(
        [
            service("headless", "None", {"port": 80}),
            service("ext", None, {"port": 80}, type="ExternalName", externalName="x.example"),
            {
                "metadata": {"namespace": "default", "name": "kubernetes"},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]},
            },
            service("sctp", "10.96.0.60", {"port": 9, "protocol": "SCTP"}),
            service("outside", "10.97.0.5", {"port": 80}),
        ],
        [],
    )
    assert found.ports == []


def test_client_ip_affinity_carries_its_timeout() -> None:
    sticky = service("sticky", "10.96.0.51", {"port": 80}, sessionAffinity="ClientIP")
    timed = service(
        "timed",
        "10.96.0.52",
        {"port": 80},
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
    )
    found = {p.name: p.affinity_seconds for p in table([sticky, timed], []).ports}
    assert found == {"shop/sticky:80": 10800, "shop/timed:80": 60}


def test_service_cidrs_come_from_servicecidr_objects_ipv4_only() -> None:
    objects = [
        {"spec": {"cidrs": ["10.96.0.0/24", "fd00::/108"]}},
        {"spec": {"cidrs": ["10.100.0.0/16", "10.96.0.0/24"]}},
    ]
    assert services.cidrs(objects) == ["10.100.0.0/16", "10.96.0.0/24"]


def test_the_fleet_models_refuse_a_table_it_could_not_route() -> None:
    with pytest.raises(pydantic.ValidationError, match="not a private IPv4 range"):
        models.ServiceTable(service_cidrs=["8.8.8.0/24"])
    with pytest.raises(pydantic.ValidationError, match="is in no service CIDR"):
        models.ServiceTable(
            service_cidrs=CIDRS, ports=[{"name": "a/b:1", "cluster_ip": "10.1.0.1", "port": 1}]
        )


def test_internal_traffic_policy_local_has_no_endpoint_on_a_node_of_one_pod() -> None:
    local = service("local", "10.96.0.53", {"port": 80}, internalTrafficPolicy="Local")
    slices = [endpoint_slice("local", [{"port": 80}], ("192.168.0.7", True))]
    (port,) = table([local], slices).ports
    assert port.endpoints == []
