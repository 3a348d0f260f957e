"""A pod that gets a freed address is reachable at once, from the host (probes, hooks,
port-forward) as from other pods, while other pods keep the subnet's bridge up.

The host remembers the MAC of each address it talked to. A new pod with a MAC of its
own would get nothing from the host until that entry expired: CI saw an httpGet
preStop hook hang for its whole grace period that way, once the session's pods had
gone round the subnet. The sandboxes here are made as fleetd makes them, on a bridge
of a free /24 the test creates and removes."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleetd import network, sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

SUBNET = "subnet-test-reuse"


@pytest.fixture
async def subnet() -> AsyncIterator[ipaddress.IPv4Network]:
    (cidr,) = devfleet.free_subnets(1)
    network.ensure_bridge(SUBNET, cidr, cidr[1])
    try:
        yield cidr
    finally:
        for key in ("reuse-keeper", "reuse-old", "reuse-new"):
            await network.delete_sandbox(key)
        network.remove_bridge(SUBNET)


async def _sandbox(key: str, ip: ipaddress.IPv4Address, cidr: ipaddress.IPv4Network) -> None:
    await network.create_sandbox(
        key, ip=ip, prefix_len=cidr.prefixlen, gateway=cidr[1], bridge=network.bridge_name(SUBNET)
    )


def _serve(key: str) -> subprocess.Popen[bytes]:
    """One answer on port 8080 inside sandbox ``key``."""
    return subprocess.Popen(
        ["ip", "netns", "exec", network.netns_name(key), "busybox", "nc", "-l", "-p", "8080",
         "-e", "echo", "hello"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def _greeting(ip: ipaddress.IPv4Address) -> bytes:
    """Connect to ``ip``:8080 from the host (retrying while the listener starts)."""
    for _ in range(50):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(str(ip), 8080), 5)
        except ConnectionRefusedError:
            await asyncio.sleep(0.1)
            continue
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return data
    raise AssertionError(f"nothing listened on {ip}:8080")


async def test_a_freed_address_reaches_its_new_pod(subnet: ipaddress.IPv4Network) -> None:
    address = subnet[9]
    await _sandbox("reuse-keeper", subnet[50], subnet)  # the bridge stays up throughout
    await _sandbox("reuse-old", address, subnet)
    old = _serve("reuse-old")
    assert await _greeting(address) == b"hello\n"
    old.wait(5)
    await network.delete_sandbox("reuse-old")
    bridge = Path("/sys/class/net", network.bridge_name(SUBNET), "address")
    assert bridge.read_text().strip() == sandbox.mac_address(str(subnet[1]))  # it stays

    await _sandbox("reuse-new", address, subnet)
    new = _serve("reuse-new")
    try:
        # TimeoutError here: the host still sent to the old pod's MAC.
        assert await _greeting(address) == b"hello\n"
    finally:
        new.kill()
        new.wait(5)


def test_the_mac_follows_the_address() -> None:
    assert sandbox.mac_address("192.168.20.9") == "0a:58:c0:a8:14:09"
    assert sandbox.mac_address("10.0.0.1") == "0a:58:0a:00:00:01"
