"""Real pod networking for the process runtime: a bridge per subnet, a network
namespace per microVM, joined by a veth pair.

Invariants: a subnet's bridge (holding the gateway address, hence the route) exists
before any address of the subnet is handed out, so no packet for a pod IP ever
leaves the machine; the host forwards between the fleet's bridges and from them to
nowhere else (``forwarding``); a subnet that overlaps a route this daemon did not make is
refused, so we never shadow a real network. Without root (or ``ip``) networking is
``nominal``: addresses are allocated and reported but nothing answers on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from vk_fargate import errors
from vk_fargate.fleetd import forwarding, sandbox

Mode = Literal["netns", "nominal"]
NETNS_DIR = "/run/netns"


def detect(requested: Literal["auto", "netns", "nominal"]) -> Mode:
    """``netns`` when root with iproute2, unless ``nominal`` was asked for."""
    able = os.geteuid() == 0 and shutil.which("ip") is not None
    if requested == "netns" and not able:
        raise errors.ConfigError("networking: netns needs root and iproute2 (`ip`)")
    if requested == "nominal":
        return "nominal"
    return "netns" if able else "nominal"


def _short(prefix: str, key: str) -> str:
    """A stable interface name of at most 15 characters (the kernel's limit)."""
    return prefix + hashlib.sha1(key.encode()).hexdigest()[: 15 - len(prefix)]


def bridge_name(subnet_id: str) -> str:
    return _short("vkfbr", subnet_id)


def host_end(vm_id: str) -> str:
    """The host's end of the sandbox's veth pair (``vm_id``: the sandbox key)."""
    return _short("vkfv", vm_id)


def counters(interface: str) -> dict[str, int] | None:
    """The kernel's rx/tx byte and error counters of a host interface; None if it is gone."""
    folder = Path("/sys/class/net") / interface / "statistics"
    try:
        return {
            name: int((folder / name).read_text())
            for name in ("rx_bytes", "rx_errors", "tx_bytes", "tx_errors")
        }
    except (OSError, ValueError):
        return None


def netns_name(vm_id: str) -> str:
    return f"vkf-{vm_id}"


def netns_path(vm_id: str) -> str:
    return f"{NETNS_DIR}/{netns_name(vm_id)}"


def _ip(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )


def _routes() -> list[dict[str, str]]:
    done = _ip("-j", "route", "show", "table", "all")
    routes: list[dict[str, str]] = json.loads(done.stdout or "[]")
    return routes


def ensure_bridge(
    subnet_id: str, cidr: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address
) -> str:
    """Create the subnet's bridge with the gateway address (and so its route).

    Its MAC is set, from the gateway's address: a bridge left to take its lowest
    port's MAC changes it whenever that pod goes, and every pod's neighbour entry for
    the gateway would then be stale (as the host's for a reused pod address, were a
    pod's MAC not fixed by its address: ``sandbox.mac_address``)."""
    name = bridge_name(subnet_id)
    for route in _routes():
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == name:
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version == 4 and other.overlaps(cidr) and not other.is_loopback:
            raise errors.ConfigError(
                f"subnet {subnet_id} ({cidr}) overlaps the route to {dst} via "
                f"{route.get('dev')}; pick a CIDR this machine does not use"
            )
    if _ip("link", "show", name).returncode != 0:
        _check(_ip("link", "add", "name", name, "type", "bridge"), f"create bridge {name}")
    mac = sandbox.mac_address(str(gateway))
    _check(_ip("link", "set", name, "address", mac), f"set the MAC of bridge {name}")
    address = f"{gateway}/{cidr.prefixlen}"
    if address not in _ip("-br", "addr", "show", name).stdout:
        _check(_ip("addr", "add", address, "dev", name), f"address bridge {name}")
    _check(_ip("link", "set", name, "up"), f"bring up bridge {name}")
    forwarding.forward_between_bridges(name)
    return name


def remove_bridge(subnet_id: str) -> None:
    _ip("link", "del", bridge_name(subnet_id))


async def _batch(commands: list[str], *, netns: str | None = None) -> None:
    args = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate("\n".join(commands).encode() + b"\n")
    if proc.returncode != 0:
        raise errors.VkFargateError(f"ip -batch failed: {out.decode(errors='replace').strip()}")


async def create_sandbox(
    vm_id: str,
    *,
    ip: ipaddress.IPv4Address,
    prefix_len: int,
    gateway: ipaddress.IPv4Address,
    bridge: str,
) -> str:
    """A network namespace whose eth0 holds ``ip``, wired to ``bridge``; its path.

    ``vm_id`` is the fleet's key for the sandbox (its prefix plus the microVM id).
    """
    ns = netns_name(vm_id)
    veth = host_end(vm_id)
    await delete_sandbox(vm_id)  # a leftover of a crash would make `netns add` fail
    await _batch(
        [
            f"netns add {ns}",
            f"link add {veth} type veth peer name eth0 address {sandbox.mac_address(str(ip))} "
            f"netns {ns}",
            f"link set {veth} master {bridge}",
            f"link set {veth} up",
        ]
    )
    await _batch(
        [
            "link set lo up",
            f"addr add {ip}/{prefix_len} dev eth0",
            "link set eth0 up",
            f"route add default via {gateway}",
        ],
        netns=ns,
    )
    return netns_path(vm_id)


async def apply_rules(vm_id: str, text: str) -> None:
    """Replace the ``nat`` and ``filter`` tables of ``vm_id``'s namespace with ``text``
    (``servicerules``) in one ``iptables-restore``: atomic, and nothing piles up."""
    if shutil.which("iptables-restore") is None:
        raise errors.VkFargateError(
            "service rules need iptables on the host (Debian package iptables)"
        )
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns_name(vm_id), "iptables-restore", "-w", "10",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            out, _ = await proc.communicate(text.encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise errors.VkFargateError(f"iptables-restore in {netns_name(vm_id)} took 30 s") from None
    if proc.returncode != 0:
        raise errors.VkFargateError(
            f"service rules in {netns_name(vm_id)}: {out.decode(errors='replace').strip()}"
        )


def foreign_route(cidr: ipaddress.IPv4Network, ours: set[str]) -> str | None:
    """The host's route that overlaps ``cidr``, said in words, unless it is one of the
    unreachable routes ``ours`` (CIDRs) this daemon made; None when there is none."""
    for route in _routes():
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if route.get("type") == "unreachable" and str(other) in ours:
            continue
        if other.version == 4 and other.overlaps(cidr):
            how = route.get("dev") or route.get("type") or "unknown"
            return f"{route.get('type', 'unicast')} route to {dst} ({how})"
    return None


def add_unreachable(cidr: str) -> None:
    """Route ``cidr`` nowhere on the host (idempotent): no packet for it leaves."""
    _check(_ip("route", "replace", "unreachable", cidr), f"unreachable route {cidr}")


def remove_unreachable(cidr: str) -> None:
    """Remove the unreachable route to ``cidr`` (a no-op when there is none)."""
    _ip("route", "del", "unreachable", cidr)


async def sweep(prefix: str, keep: set[str]) -> list[str]:
    """Delete this fleet's namespaces (ids starting with ``prefix``) not in ``keep``."""
    root = Path(NETNS_DIR)
    stale = [
        entry.name.removeprefix("vkf-")
        for entry in (root.iterdir() if root.is_dir() else [])
        if entry.name.startswith(f"vkf-{prefix}") and entry.name.removeprefix("vkf-") not in keep
    ]
    for key in stale:
        await delete_sandbox(key)
    return stale


async def delete_sandbox(vm_id: str) -> None:
    """Remove the namespace (its veth pair goes with it); a no-op when absent."""
    path = Path(netns_path(vm_id))
    if path.exists():
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "del",
            netns_name(vm_id),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await proc.wait()
        # A namespace whose mount is already gone leaves its (empty) file behind.
        path.unlink(missing_ok=True)


def _check(done: subprocess.CompletedProcess[str], step: str) -> None:
    if done.returncode != 0:
        raise errors.ConfigError(f"{step}: {done.stderr.strip()}")
