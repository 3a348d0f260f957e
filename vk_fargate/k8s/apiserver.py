"""Where the cluster's API server listens, as a pod reaching the ``kubernetes`` Service
must be sent: the Service's EndpointSlice when the API server keeps one; else (an API
server advertising a loopback address keeps none, as the local stack's does) the
address this provider itself talks to."""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse

from vk_fargate import errors
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)

SLICES = (
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    "?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes"
)


async def endpoint(api: kube.Kube) -> str | None:
    """``address:port`` of the API server (one GET), or None when it has no address."""
    try:
        found = await api.get(SLICES)
    except errors.KubeError as exc:
        if isinstance(exc, errors.KubeUnavailable) or exc.status >= 500:
            raise
        log.warning("cannot list the kubernetes Service's EndpointSlices: %s", exc.message)
        return own(api)
    for piece in found.get("items") or []:
        ports = [p.get("port") for p in piece.get("ports") or [] if p.get("name") == "https"]
        for point in piece.get("endpoints") or []:
            ready = (point.get("conditions") or {}).get("ready", True)
            if ports and ready and point.get("addresses"):
                return _joined(point["addresses"][0], int(ports[0]))
    return own(api)


def own(api: kube.Kube) -> str | None:
    """``address:port`` of the API server this client calls, when it is an address."""
    url = urllib.parse.urlsplit(api.api.configuration.host)
    try:
        address = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        return None
    return _joined(str(address), url.port or 443)


def _joined(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
