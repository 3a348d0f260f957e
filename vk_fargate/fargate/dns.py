"""A pod's names and resolver, worked out as the kubelet works them out (its
``pkg/kubelet/network/dns`` and ``GeneratePodHostNameAndDomain``), so that a Fargate pod
sees the ``/etc/resolv.conf``, ``/etc/hosts`` and hostname a node would give it. Pure.

- ``ClusterFirst`` (the default): the cluster's DNS Service, ``search
  <ns>.svc.<domain> svc.<domain> <domain>``, ``options ndots:5``. With no cluster DNS
  known it falls back to ``Default`` with the kubelet's ``MissingClusterDNS`` warning.
- ``Default``: the host's resolver (the fleet host's ``/etc/resolv.conf``).
- ``None``: ``dnsConfig`` alone. ``dnsConfig`` extends the other two, as the kubelet's
  ``appendDNSConfig``: nameservers and searches appended, options merged by name.
- ``ClusterFirstWithHostNet`` is refused, as ``hostNetwork`` is on Fargate.

The hostname is ``spec.hostname`` or the pod's name, cut to 63 characters; a
``subdomain`` gives the pod ``<hostname>.<subdomain>.<ns>.svc.<domain>`` in
``/etc/hosts``, and ``setHostnameAsFQDN`` makes that its kernel hostname.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vk_fargate.fleet import models

JSON = dict[str, Any]
MAX_NAMESERVERS = 3  # the kubelet's validation.MaxDNSNameservers
MAX_SEARCHES = 32  # validation.MaxDNSSearchPaths
MAX_SEARCH_CHARS = 2048  # validation.MaxDNSSearchListChars
HOSTNAME_MAX = 63  # a DNS label; the kubelet truncates the pod's hostname to it
FQDN_MAX = 64  # Linux's hostname limit, which setHostnameAsFQDN must fit
DEFAULT_OPTIONS = ("ndots:5",)


class Refused(ValueError):
    """A pod whose names or resolver cannot be given as asked (the kubelet fails its
    sandbox the same way); the message is the kubelet's."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The kubelet's ``clusterDNS`` and ``clusterDomain``."""

    nameservers: tuple[str, ...] = ()
    domain: str = "cluster.local"


@dataclasses.dataclass(frozen=True)
class Names:
    """What the microVM spec carries of the pod's names and resolver, and the warnings
    (reason, message) the kubelet would record while working them out."""

    hostname: str
    domain: str | None
    hostname_as_fqdn: bool
    host_aliases: list[models.HostAlias]
    dns: models.DNSConfig | None
    warnings: list[tuple[str, str]]


def kube_dns(services: list[JSON]) -> tuple[str, ...]:
    """The ClusterIPs of the ``kube-dns`` Service among kube-system's ``services`` (the
    address every cluster's DNS answers on, CoreDNS's included); none while it has
    none."""
    for service in services:
        if service["metadata"]["name"] != "kube-dns":
            continue
        spec = service.get("spec") or {}
        ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        return tuple(ip for ip in ips if ip and ip != "None")
    return ()


def hostname(pod: JSON) -> str:
    """``spec.hostname`` or the pod's name, cut to 63 characters without a trailing
    ``-`` or ``.`` (the kubelet's ``truncatePodHostnameIfNeeded``)."""
    name = str((pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"])
    return name[:HOSTNAME_MAX].rstrip("-.") if len(name) > HOSTNAME_MAX else name


def names(pod: JSON, cluster: Cluster) -> Names:
    """The pod's names and resolver; ``Refused`` when the kubelet would refuse them."""
    spec = pod.get("spec") or {}
    meta = pod["metadata"]
    host = hostname(pod)
    subdomain = spec.get("subdomain")
    domain = f"{subdomain}.{meta['namespace']}.svc.{cluster.domain}" if subdomain else None
    as_fqdn = bool(spec.get("setHostnameAsFQDN")) and domain is not None
    if as_fqdn and len(f"{host}.{domain}") > FQDN_MAX:
        fqdn = f"{host}.{domain}"
        raise Refused(
            f"failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is "
            f"too long ({FQDN_MAX} characters is the max, {len(fqdn)} characters requested)"
        )
    warnings: list[tuple[str, str]] = []
    resolver = _resolver(pod, cluster, warnings)
    aliases = [
        models.HostAlias(ip=a["ip"], hostnames=a.get("hostnames") or [])
        for a in spec.get("hostAliases") or []
        if a.get("hostnames")
    ]
    return Names(host, domain, as_fqdn, aliases, resolver, warnings)


def _resolver(
    pod: JSON, cluster: Cluster, warnings: list[tuple[str, str]]
) -> models.DNSConfig | None:
    spec = pod.get("spec") or {}
    meta = pod["metadata"]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirstWithHostNet":
        raise Refused(
            "dnsPolicy ClusterFirstWithHostNet is for hostNetwork pods, and Fargate pods "
            "cannot use the host's network"
        )
    if policy not in ("ClusterFirst", "Default", "None"):
        raise Refused(f"dnsPolicy {policy!r} is not one of ClusterFirst, Default, None")
    if policy == "ClusterFirst" and not cluster.nameservers:
        message = (
            "kubelet does not have ClusterDNS IP configured and cannot create Pod using "
            '"ClusterFirst" policy. Falling back to "Default" policy.'
        )
        pod_ref = f"{meta['name']}_{meta['namespace']}({meta.get('uid', '')})"
        warnings.append(("MissingClusterDNS", f'pod: "{pod_ref}". {message}'))
        policy = "Default"
    extra = spec.get("dnsConfig") or {}
    if policy == "Default" and not extra:
        return None  # the host's file as it is
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy == "ClusterFirst":
        servers = list(cluster.nameservers)
        ns = meta["namespace"]
        searches = [f"{ns}.svc.{cluster.domain}", f"svc.{cluster.domain}", cluster.domain]
        options = list(DEFAULT_OPTIONS)
    servers = _unique(servers + list(extra.get("nameservers") or []))
    searches = _unique(searches + list(extra.get("searches") or []))
    options = merge_options(options, extra.get("options") or [])
    return models.DNSConfig(
        nameservers=_fit_servers(servers, warnings),
        searches=_fit_searches(searches, warnings),
        options=options,
        extend_host=policy == "Default",
    )


def merge_options(existing: list[str], more: list[JSON]) -> list[str]:
    """``existing`` (``name`` or ``name:value``) with ``dnsConfig.options`` over them by
    name (the kubelet's ``mergeDNSOptions``), in first-seen order."""
    merged: dict[str, str | None] = {}
    for option in existing:
        name, sep, value = option.partition(":")
        merged[name] = value if sep else None
    for extra in more:
        if extra.get("name"):
            merged[str(extra["name"])] = extra.get("value")
    return [name if value is None else f"{name}:{value}" for name, value in merged.items()]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _fit_servers(servers: list[str], warnings: list[tuple[str, str]]) -> list[str]:
    if len(servers) <= MAX_NAMESERVERS:
        return servers
    kept = servers[:MAX_NAMESERVERS]
    warnings.append(
        (
            "DNSConfigForming",
            "Nameserver limits were exceeded, some nameservers have been omitted, the "
            f"applied nameserver line is: {' '.join(kept)}",
        )
    )
    return kept


def _fit_searches(searches: list[str], warnings: list[tuple[str, str]]) -> list[str]:
    kept: list[str] = []
    for search in searches[:MAX_SEARCHES]:
        if len(" ".join([*kept, search])) > MAX_SEARCH_CHARS:
            break
        kept.append(search)
    if len(kept) < len(searches):
        warnings.append(
            (
                "DNSConfigForming",
                "Search Line limits were exceeded, some search paths have been omitted, "
                f"the applied search line is: {' '.join(kept)}",
            )
        )
    return kept
