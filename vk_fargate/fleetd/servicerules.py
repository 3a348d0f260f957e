"""The iptables rules of one pod's network namespace, as text for ``iptables-restore``.

A ``process`` microVM has no kube-proxy beside it, so fleetd writes into its namespace
what kube-proxy's iptables mode writes on a node, from two inputs: the microVM's
service routes (``relay``: the API server behind its subnet's gateway) and its
cluster's Service table. One text replaces the namespace's whole ``nat`` and
``filter`` tables (``iptables-restore`` without ``--noflush``), so a new table takes
effect atomically and nothing of an old one is left over. Pure: the same inputs give
the same text, so a digest of it tells whether a namespace needs it again.

- ``nat OUTPUT``: the relay rules first (the ``kubernetes`` Service may be in both
  inputs: the relay wins), then ``KUBE-SERVICES``, one jump per Service port to its
  ``KUBE-SVC-*`` chain, which picks an endpoint at random (``statistic``, probability
  ``1/(n-i)`` for the i-th of n, the last one unconditional), or first the one this
  pod used within ``affinity_seconds`` (``recent``), and jumps to its ``KUBE-SEP-*``
  chain, which DNATs to it.
- ``filter OUTPUT``: a port without endpoints is refused by name, then every address
  left in a Service range (not DNATed) is refused (ICMP port unreachable), so a
  connect to it fails at once instead of leaving the machine.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Sequence

from vk_fargate.fleet import models

Relay = tuple[str, int, str, int]
"""A service route as a rule: (cluster_ip, port, gateway, relay port)."""
REJECT = "-j REJECT --reject-with icmp-port-unreachable"


def _chain(prefix: str, *parts: str) -> str:
    """A chain name of ``prefix`` plus 16 characters of a hash, as kube-proxy names
    them (28 characters at most, iptables' limit)."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def _key(port: models.ServicePort) -> tuple[str, str, str, str]:
    return (port.name, port.protocol, port.cluster_ip, str(port.port))


def svc_chain(port: models.ServicePort) -> str:
    return _chain("KUBE-SVC-", *_key(port))


def sep_chain(port: models.ServicePort, endpoint: str) -> str:
    return _chain("KUBE-SEP-", *_key(port), endpoint)


def _endpoint(endpoint: str) -> str:
    """``address:port`` as iptables reads it (the model lets ``port`` be any digits)."""
    host, _, port = endpoint.rpartition(":")
    return f"{ipaddress.IPv4Address(host)}:{int(port)}"


def cidr_text(cidr: str) -> str:
    """A Service range as ``ip`` and iptables read it (``a.b.c.d/len``)."""
    return str(ipaddress.IPv4Network(cidr))


def _ordered(table: models.ServiceTable) -> list[models.ServicePort]:
    """The ports in one order whatever order the client sent them in."""
    return sorted(
        table.ports,
        key=lambda p: (tuple(int(b) for b in p.cluster_ip.split(".")), p.port, p.protocol),
    )


def _nat(relays: Sequence[Relay], ports: list[models.ServicePort]) -> list[str]:
    chains = ["KUBE-SERVICES"]
    rules: list[str] = []
    for cluster_ip, port, gateway, relay_port in relays:
        rules.append(
            f"-A OUTPUT -d {cluster_ip}/32 -p tcp -m tcp --dport {port} "
            f'-m comment --comment "service route {cluster_ip}:{port} via the gateway relay" '
            f"-j DNAT --to-destination {gateway}:{relay_port}"
        )
    rules.append('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    for p in ports:
        if not p.endpoints:
            continue
        proto = p.protocol.lower()
        match = f'-p {proto} -m comment --comment "{p.name}"'
        svc = svc_chain(p)
        chains.append(svc)
        rules.append(
            f"-A KUBE-SERVICES -d {p.cluster_ip}/32 -p {proto} "
            f'-m comment --comment "{p.name} cluster IP" -m {proto} --dport {p.port} -j {svc}'
        )
        endpoints = sorted({_endpoint(e) for e in p.endpoints})
        seps = [sep_chain(p, e) for e in endpoints]
        chains.extend(seps)
        if p.affinity_seconds:
            for sep in seps:
                rules.append(
                    f"-A {svc} {match} -m recent --name {sep} --rcheck "
                    f"--seconds {p.affinity_seconds} --reap -j {sep}"
                )
        n = len(seps)
        for i, sep in enumerate(seps):
            chance = f" -m statistic --mode random --probability {1 / (n - i):.10f}"
            rules.append(f"-A {svc} {match}{chance if i < n - 1 else ''} -j {sep}")
        for sep, endpoint in zip(seps, endpoints, strict=True):
            remember = f" -m recent --name {sep} --set" if p.affinity_seconds else ""
            rules.append(
                f"-A {sep} {match}{remember} -m {proto} -j DNAT --to-destination {endpoint}"
            )
    return [
        "*nat",
        *(f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")),
        *(f":{c} - [0:0]" for c in chains),
        *rules,
        "COMMIT",
    ]


def _filter(table: models.ServiceTable, ports: list[models.ServicePort]) -> list[str]:
    rules = ['-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']
    for p in ports:
        if not p.endpoints:
            proto = p.protocol.lower()
            rules.append(
                f"-A KUBE-SERVICES -d {p.cluster_ip}/32 -p {proto} "
                f'-m comment --comment "{p.name} has no endpoints" '
                f"-m {proto} --dport {p.port} {REJECT}"
            )
    for cidr in map(cidr_text, table.service_cidrs):
        rules.append(
            f"-A KUBE-SERVICES -d {cidr} "
            f'-m comment --comment "service range {cidr}: no such service port" {REJECT}'
        )
    return [
        "*filter",
        *(f":{c} ACCEPT [0:0]" for c in ("INPUT", "FORWARD", "OUTPUT")),
        ":KUBE-SERVICES - [0:0]",
        *rules,
        "COMMIT",
    ]


def render(relays: Sequence[Relay], table: models.ServiceTable) -> str:
    """The ``iptables-restore`` input of a namespace: its relays and ``table``."""
    ports = _ordered(table)
    return "\n".join([*_nat(relays, ports), *_filter(table, ports)]) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


EMPTY = digest(render([], models.ServiceTable()))
"""The digest of the rules a namespace has when it is made: none."""
