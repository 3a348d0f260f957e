"""Tests of ipam.SubnetPool: reserved addresses, round-robin, wanted addresses, exhaustion."""

from __future__ import annotations

import ipaddress

import pytest

from vk_fargate import errors
from vk_fargate.fleetd import ipam

IP = ipaddress.IPv4Address


def pool(cidr: str = "10.0.0.0/28") -> ipam.SubnetPool:
    return ipam.SubnetPool("subnet-1", ipaddress.IPv4Network(cidr), "zone-a")


def drain(subnet: ipam.SubnetPool) -> list[ipaddress.IPv4Address]:
    """Every address the pool hands out until it is exhausted."""
    taken = []
    while subnet.free:
        taken.append(subnet.allocate())
    return taken


def test_a_slash_28_hands_out_exactly_the_eleven_usable_addresses() -> None:
    subnet = pool("10.0.0.0/28")
    assert subnet.size == 11
    assert subnet.gateway == IP("10.0.0.1")
    taken = drain(subnet)
    assert taken == [IP(f"10.0.0.{n}") for n in range(4, 15)]
    assert subnet.free == 0


@pytest.mark.parametrize("cidr", ["10.0.0.0/28", "192.168.16.0/24", "172.16.0.0/20"])
def test_reserved_head_and_broadcast_are_never_handed_out(cidr: str) -> None:
    subnet = pool(cidr)
    network = ipaddress.IPv4Network(cidr)
    reserved = {network.network_address + i for i in range(4)} | {network.broadcast_address}
    taken = drain(subnet)
    assert len(taken) == len(set(taken)) == network.num_addresses - 5
    assert not reserved & set(taken)
    assert all(a in network for a in taken)
    for address in reserved:
        assert not subnet.usable(address)


def test_exhaustion_is_insufficient_capacity_and_naming_the_subnet() -> None:
    subnet = pool()
    drain(subnet)
    with pytest.raises(errors.InsufficientCapacity, match="subnet-1"):
        subnet.allocate()


def test_a_freed_address_is_not_reused_at_once() -> None:
    subnet = pool()
    first, second, third = subnet.allocate(), subnet.allocate(), subnet.allocate()
    assert (first, second, third) == (IP("10.0.0.4"), IP("10.0.0.5"), IP("10.0.0.6"))
    subnet.release(first)
    assert subnet.allocate() == IP("10.0.0.7")
    assert first not in subnet.used


def test_round_robin_wraps_around_to_freed_addresses() -> None:
    subnet = pool()
    taken = drain(subnet)
    subnet.release(taken[5])
    subnet.release(taken[2])
    # The cursor is at the end: the next free after it, wrapping, is the lowest freed one.
    assert subnet.allocate() == taken[2]
    assert subnet.allocate() == taken[5]
    with pytest.raises(errors.InsufficientCapacity):
        subnet.allocate()


def test_release_of_an_address_not_in_use_is_harmless() -> None:
    subnet = pool()
    subnet.release(IP("10.0.0.9"))
    assert subnet.free == subnet.size


def test_free_counts_allocations_and_releases() -> None:
    subnet = pool()
    address = subnet.allocate()
    assert subnet.free == subnet.size - 1
    subnet.release(address)
    assert subnet.free == subnet.size


def test_a_wanted_free_address_is_taken() -> None:
    subnet = pool()
    assert subnet.allocate(IP("10.0.0.10")) == IP("10.0.0.10")
    assert IP("10.0.0.10") in subnet.used
    # Automatic allocation skips it.
    assert IP("10.0.0.10") not in [subnet.allocate() for _ in range(subnet.free)]


@pytest.mark.parametrize(
    ("wanted", "why"),
    [
        ("10.0.1.4", "outside the subnet"),
        ("192.168.0.5", "outside the subnet"),
        ("10.0.0.0", "the network address"),
        ("10.0.0.1", "the gateway"),
        ("10.0.0.2", "reserved"),
        ("10.0.0.3", "reserved"),
        ("10.0.0.15", "the broadcast address"),
    ],
)
def test_a_wanted_unusable_address_is_invalid_spec_on_private_ip(wanted: str, why: str) -> None:
    subnet = pool()
    with pytest.raises(errors.InvalidSpec, match="not a usable address") as caught:
        subnet.allocate(IP(wanted))
    assert caught.value.field == "private_ip", why
    assert not subnet.used


def test_a_wanted_address_in_use_is_invalid_spec_on_private_ip() -> None:
    subnet = pool()
    address = subnet.allocate()
    with pytest.raises(errors.InvalidSpec, match="already in use") as caught:
        subnet.allocate(address)
    assert caught.value.field == "private_ip"
    assert caught.value.status == 422
    assert subnet.used == {address}


def test_a_wanted_address_that_was_released_can_be_taken_again() -> None:
    subnet = pool()
    address = subnet.allocate(IP("10.0.0.8"))
    subnet.release(address)
    assert subnet.allocate(IP("10.0.0.8")) == IP("10.0.0.8")


def resting_pool(quarantine: float = 300.0) -> ipam.SubnetPool:
    return ipam.SubnetPool(
        "subnet-1", ipaddress.IPv4Network("10.0.0.0/28"), "zone-a", quarantine=quarantine
    )


def test_a_freed_address_rests_while_others_are_free_even_after_a_wrap() -> None:
    subnet = resting_pool()
    taken = drain(subnet)  # t = 0
    subnet.release(taken[3], now=100.0)
    subnet.release(taken[7], now=390.0)
    # At t=420, taken[3] has rested 320 s (> 300) and taken[7] only 30 s.
    assert subnet.allocate(now=420.0) == taken[3]


def test_resting_addresses_go_oldest_first_when_nothing_else_is_free() -> None:
    subnet = resting_pool()
    taken = drain(subnet)
    subnet.release(taken[8], now=10.0)
    subnet.release(taken[2], now=20.0)
    assert subnet.allocate(now=30.0) == taken[8]
    assert subnet.allocate(now=30.0) == taken[2]
    with pytest.raises(errors.InsufficientCapacity):
        subnet.allocate(now=30.0)


def test_a_restored_pool_goes_on_after_its_cursor_and_keeps_resting_addresses() -> None:
    """A restart must not start again at the subnet's head (the addresses just freed)."""
    before = resting_pool()
    first, second, third = (before.allocate(now=0.0) for _ in range(3))
    before.release(first, now=50.0)
    before.release(second, now=50.0)
    after = resting_pool()
    after.used.add(third)  # the microVM that survived the restart
    after.restore(before.state())
    assert after.allocate(now=60.0) == IP("10.0.0.7")
    assert after.released == {first: 50.0, second: 50.0}


def test_a_restored_state_from_another_subnet_is_ignored() -> None:
    subnet = resting_pool()
    subnet.restore({"cursor": "10.9.9.9", "released": {"10.9.9.10": 1.0}})
    assert subnet.allocate() == IP("10.0.0.4")
    assert not subnet.released
