"""Routing between the fleet's subnets, and nowhere else: a pod reaches a pod of the
other zone's subnet through the host, as in a VPC, and a connect from a pod to an
address the host routes elsewhere is refused on the host at once, forwarding nothing.

The "elsewhere" is a bridge with no ports (not a fleet's) the test makes with a free
/24: were the refusal missing, the packet would be forwarded into it (and counted on
its way out, in mangle POSTROUTING) and dropped there, never off the machine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client
from vk_fargate.fleetd import forwarding

DUMMY = "vkftestfwd0"


@pytest.fixture
def elsewhere() -> Iterator[str]:
    """An address routed to a portless bridge of the host (its /24 is free here)."""
    (net,) = devfleet.free_subnets(1)
    count = ("-o", DUMMY, "-d", f"{net[2]}/32")  # a rule with no target only counts
    subprocess.run(["ip", "link", "add", DUMMY, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{net[1]}/24", "dev", DUMMY], check=True)
        subprocess.run(["ip", "link", "set", DUMMY, "up"], check=True)
        subprocess.run(["iptables", "-w", "-t", "mangle", "-I", "POSTROUTING", *count], check=True)
        yield str(net[2])
    finally:
        subprocess.run(["iptables", "-w", "-t", "mangle", "-D", "POSTROUTING", *count], check=False)
        subprocess.run(["ip", "link", "del", DUMMY], check=False)


def forwarded_to_elsewhere() -> int:
    """Packets that left by the portless bridge (the counting rule's count)."""
    listed = subprocess.run(
        ["iptables", "-w", "-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(int(row.split()[0]) for row in listed.splitlines() if f" {DUMMY} " in row)


async def _logs(fleet: client.FleetClient, vm_id: str) -> str:
    return b"".join([c async for c in fleet.logs(vm_id, "app")]).decode()


async def test_pods_of_two_subnets_reach_each_other_and_nothing_else(
    fleet_client: client.FleetClient, elsewhere: str
) -> None:
    server_id, client_id = helpers.new_id(), helpers.new_id()
    server = helpers.spec(
        helpers.shell("app", "nc -ll -p 8080 -e echo hello from zone b"), zone="eu-central-1b"
    )
    served = await fleet_client.put_microvm(server_id, server)
    server_ip = served.status.private_ip
    script = (
        f"until nc -w 2 {server_ip} 8080; do sleep 0.2; done; "
        f"start=$(date +%s); nc -w 5 {elsewhere} 80 </dev/null; "
        'echo "code=$? $(( $(date +%s) - start ))s"; '
        "sleep 3600"
    )
    await fleet_client.put_microvm(
        client_id, helpers.spec(helpers.shell("app", script), zone="eu-central-1a")
    )
    client_vm = await helpers.until_vm(
        fleet_client, client_id, lambda v: v.status.state == "running"
    )
    assert client_vm.status.subnet != served.status.subnet

    async def said() -> str | None:
        out = await _logs(fleet_client, client_id)
        return out if "code=" in out else None

    out = await waiting.until(said, timeout=60, what="the client's two connects")
    assert "hello from zone b" in out
    verdict = out.split("code=")[1]
    assert not verdict.startswith("0"), out  # refused, not connected
    # Refused by the host's REJECT (icmp-net-unreachable), not dropped: a drop would
    # leave nc to time out after its 5 s, saying nothing of the network.
    assert f"can't connect to remote host ({elsewhere}): Network is unreachable" in out, out
    assert forwarded_to_elsewhere() == 0
    for vm_id in (server_id, client_id):
        await fleet_client.delete_microvm(vm_id, grace_seconds=0)


def test_the_chain_refuses_what_is_not_bridge_to_bridge() -> None:
    forwarding.ensure_chain()
    listed = subprocess.run(
        ["iptables", "-S", forwarding.CHAIN], capture_output=True, text=True, check=True
    ).stdout
    assert f"-A {forwarding.CHAIN} -i vkfbr+ -o vkfbr+ -j ACCEPT" in listed
    assert "-i vkfbr+ -j REJECT --reject-with icmp-net-unreachable" in listed
    first = subprocess.run(
        ["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert first[1] == f"-A FORWARD -j {forwarding.CHAIN}"
    forwarding.ensure_chain()  # again: nothing added twice
    again = subprocess.run(
        ["iptables", "-S", forwarding.CHAIN], capture_output=True, text=True, check=True
    ).stdout
    assert again == listed
