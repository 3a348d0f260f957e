"""Routing between a fleet's subnets, and nowhere else.

A microVM's subnet is a bridge on the host, and a fleet has several (one or more per
zone). A pod reaches a pod of another subnet as in a VPC, whose subnets route to each
other: through the host, which forwards between its bridges. That is what a Service
needs too, as its endpoints are spread over zones.

The host forwards only that. IPv4 forwarding is turned on per bridge (the input
device's ``forwarding``), never for the whole host, and one chain, ``VKF-FORWARD``,
first in the host's ``FORWARD``, accepts bridge-to-bridge traffic and refuses anything
else that comes from a bridge (``icmp-net-unreachable``: a pod's connect to an
address off the machine fails at once and no packet leaves). The chain is in place
before the bridge forwards. It matches every fleet's bridges (``vkfbr+``), so two
fleetd on one host share it; making it again changes nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from vk_fargate import errors

CHAIN = "VKF-FORWARD"
BRIDGES = "vkfbr+"  # every fleet bridge (``network.bridge_name``)
RULES = (
    ("-i", BRIDGES, "-o", BRIDGES, "-j", "ACCEPT"),
    ("-i", BRIDGES, "-j", "REJECT", "--reject-with", "icmp-net-unreachable"),
)
SYSCTL = Path("/proc/sys/net/ipv4/conf")


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "10", *args], capture_output=True, text=True, check=False, timeout=30
    )


def ensure_chain() -> None:
    """``VKF-FORWARD`` with its two rules, jumped to first from ``FORWARD``."""
    if shutil.which("iptables") is None:
        raise errors.ConfigError("routing between subnets needs iptables (Debian package)")
    if _iptables("-n", "-L", CHAIN).returncode != 0:
        _iptables("-N", CHAIN)  # a second fleetd may make it meanwhile: checked below
    for rule in RULES:
        if _iptables("-C", CHAIN, *rule).returncode != 0:
            _check(_iptables("-A", CHAIN, *rule), f"add {' '.join(rule)} to {CHAIN}")
    if _iptables("-C", "FORWARD", "-j", CHAIN).returncode != 0:
        _check(_iptables("-I", "FORWARD", "1", "-j", CHAIN), f"jump to {CHAIN}")


def forward_between_bridges(bridge: str) -> None:
    """Let ``bridge`` forward to the fleet's other bridges (and, by the chain, only there)."""
    ensure_chain()
    try:
        (SYSCTL / bridge / "forwarding").write_text("1\n")
    except OSError as exc:
        raise errors.ConfigError(f"turn on forwarding for bridge {bridge}: {exc}") from exc


def _check(done: subprocess.CompletedProcess[str], step: str) -> None:
    if done.returncode != 0:
        raise errors.ConfigError(f"{step}: {done.stderr.strip()}")
