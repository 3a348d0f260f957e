"""The cluster's ClusterIP Services as the fleet programs them into every pod: what
kube-proxy reads (Services, their EndpointSlices, the Service CIDRs) turned into one
``ServiceTable``. Pure.

As kube-proxy: a Service without a cluster IP (headless, ExternalName) gets no rule
(headless ones are served by DNS alone); each port lists the ready endpoints of the
Service's IPv4 EndpointSlices whose port has the same name and protocol (an endpoint
with no ``ready`` condition counts as ready, as the API says); ``sessionAffinity:
ClientIP`` keeps a pod on one endpoint for ``timeoutSeconds`` (10800 by default);
``internalTrafficPolicy: Local`` leaves a port no endpoint, as every Fargate pod is
alone on its node.
The ``kubernetes`` Service is left to the pods' own route to the API server (its
endpoints are the API server's addresses, which the fleet relays). SCTP ports and
IPv6 addresses are not carried: Fargate pods are IPv4, TCP and UDP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Literal

from vk_fargate.fleet import models

JSON = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_SECONDS = 10800  # the API server's default clientIP.timeoutSeconds


def key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def slice_owner(endpoint_slice: JSON) -> list[str]:
    """The index value of an EndpointSlice: its Service's ``namespace/name``."""
    meta = endpoint_slice["metadata"]
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [key(meta["namespace"], name)] if name else []


def cidrs(service_cidrs: Iterable[JSON]) -> list[str]:
    """The IPv4 ranges of the cluster's ServiceCIDR objects, widest first, deduplicated."""
    found: list[ipaddress.IPv4Network] = []
    for obj in service_cidrs:
        for cidr in (obj.get("spec") or {}).get("cidrs") or []:
            network = ipaddress.ip_network(cidr, strict=False)
            if isinstance(network, ipaddress.IPv4Network) and network not in found:
                found.append(network)
    found.sort(key=lambda n: (n.prefixlen, n))
    return [str(n) for n in found]


def table(
    services: Iterable[JSON],
    slices_of: Callable[[str], list[JSON]],
    service_cidrs: list[str],
) -> models.ServiceTable:
    """The table of ``services``, whose EndpointSlices ``slices_of(namespace/name)``
    gives; ports outside ``service_cidrs`` are left out (the fleet refuses them)."""
    ranges = [ipaddress.ip_network(c) for c in service_cidrs]
    ports: list[models.ServicePort] = []
    seen: set[tuple[str, int, str]] = set()
    for service in sorted(services, key=_service_key):
        meta = service["metadata"]
        spec = service.get("spec") or {}
        if (meta["namespace"], meta["name"]) == ("default", "kubernetes"):
            continue
        ip = _ipv4_cluster_ip(spec)
        if ip is None or not any(ipaddress.ip_address(ip) in r for r in ranges):
            continue
        affinity = _affinity(spec)
        # Local: only endpoints on the client's node, and a Fargate pod's node holds no
        # other pod: kube-proxy's "no local endpoints", refused (it drops).
        local = spec.get("internalTrafficPolicy") == "Local"
        slices = [] if local else slices_of(key(meta["namespace"], meta["name"]))
        for port in spec.get("ports") or []:
            protocol: Literal["TCP", "UDP"] = "UDP" if port.get("protocol") == "UDP" else "TCP"
            if (
                port.get("protocol", "TCP") not in ("TCP", "UDP")
                or (ip, int(port["port"]), protocol) in seen
            ):
                continue
            seen.add((ip, int(port["port"]), protocol))
            label = f"{meta['namespace']}/{meta['name']}:{port.get('name') or port['port']}"
            ports.append(
                models.ServicePort(
                    name=label,
                    cluster_ip=ip,
                    port=int(port["port"]),
                    protocol=protocol,
                    endpoints=ready_endpoints(slices, port.get("name") or "", protocol),
                    affinity_seconds=affinity,
                )
            )
    return models.ServiceTable(service_cidrs=service_cidrs, ports=ports)


def _service_key(service: JSON) -> str:
    return key(service["metadata"]["namespace"], service["metadata"]["name"])


def _ipv4_cluster_ip(spec: JSON) -> str | None:
    if spec.get("type") == "ExternalName":
        return None
    for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
        if ip and ip != "None" and ":" not in ip:
            return str(ip)
    return None


def _affinity(spec: JSON) -> int | None:
    if spec.get("sessionAffinity") != "ClientIP":
        return None
    config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP")) or {}
    return int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)


def ready_endpoints(slices: Iterable[JSON], port_name: str, protocol: str) -> list[str]:
    """``address:port`` of every ready IPv4 endpoint serving the port named
    ``port_name`` over ``protocol``, sorted, each once."""
    found: set[str] = set()
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") != "IPv4":
            continue
        numbers = [
            p.get("port")
            for p in endpoint_slice.get("ports") or []
            if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol
        ]
        if not numbers or not numbers[0]:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                found.add(f"{address}:{numbers[0]}")
    return sorted(found, key=_endpoint_order)


def _endpoint_order(endpoint: str) -> tuple[int, int]:
    address, _, port = endpoint.rpartition(":")
    return int(ipaddress.ip_address(address)), int(port)
