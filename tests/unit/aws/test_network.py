"""Tests of aws.network's pure decisions: which route makes a subnet public, which addresses
AWS reserves, and how ENIs spread over zones and subnets."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

import pytest

from vk_fargate import errors
from vk_fargate.aws import network


def test_only_internet_gateways_make_a_route_table_public() -> None:
    def table(*routes: dict[str, str]) -> dict[str, Any]:
        return {"Routes": list(routes)}

    local = {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local"}
    assert network.public_route(table(local)) is None
    assert network.public_route(table(local, {"GatewayId": "eigw-1"})) is None
    assert network.public_route(table({"NatGatewayId": "nat-1"})) is None
    assert network.public_route(table({"GatewayId": "vgw-1"})) is None
    assert network.public_route(table({"GatewayId": "igw-1", "State": "blackhole"})) is None
    assert network.public_route(table(local, {"GatewayId": "igw-1", "State": "active"})) == "igw-1"


@pytest.mark.parametrize(
    ("address", "usable"),
    [
        ("10.0.1.0", False),
        ("10.0.1.3", False),
        ("10.0.1.4", True),
        ("10.0.1.254", True),
        ("10.0.1.255", False),
        ("10.0.2.9", False),
    ],
)
def test_usable_addresses_exclude_the_five_aws_reserves(address: str, usable: bool) -> None:
    assert network.usable_address(ipaddress.IPv4Network("10.0.1.0/24"), address) is usable


# ----------------------------------------------------------------------------- spreading


def info(subnet_id: str, zone: str) -> network.SubnetInfo:
    return network.SubnetInfo(subnet_id, zone, ipaddress.IPv4Network("10.0.0.0/24"), "vpc-1")


def test_the_least_loaded_zone_wins_before_the_least_loaded_subnet() -> None:
    a1, a2, b1 = info("subnet-a1", "z-a"), info("subnet-a2", "z-a"), info("subnet-b1", "z-b")
    # Zone a holds 2 (1 + 1), zone b holds 2: tie on zones, then b1's own 2 loses to a's 1s.
    assert (
        network.choose_subnet([a1, a2, b1], {"subnet-a1": 1, "subnet-a2": 1, "subnet-b1": 2}) == a1
    )
    # Zone b holds fewer, although subnet-a2 is emptier.
    assert network.choose_subnet([a1, a2, b1], {"subnet-a1": 3, "subnet-b1": 1}) == b1
    assert network.choose_subnet([b1, a2, a1], {}) == a1  # ties: zone, then id
    with pytest.raises(errors.AwsError):
        network.choose_subnet([], {})


def test_placing_many_enis_spreads_them_evenly_over_zones_then_subnets() -> None:
    subnets = [info("subnet-a1", "z-a"), info("subnet-a2", "z-a"), info("subnet-b1", "z-b")]
    counts: Counter[str] = Counter()
    zones: Counter[str] = Counter()
    for _ in range(12):
        chosen = network.choose_subnet(subnets, counts)
        counts[chosen.subnet_id] += 1
        zones[chosen.zone] += 1
        assert max(zones.values()) - min(zones[s.zone] for s in subnets) <= 1
    assert zones == Counter({"z-a": 6, "z-b": 6})
    assert counts == Counter({"subnet-a1": 3, "subnet-a2": 3, "subnet-b1": 6})
