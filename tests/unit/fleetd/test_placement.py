"""Table-driven tests of placement: choose (best fit, zones, draining, spread) and plan."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import ipam, placement


def host(
    host_id: str,
    zone: str = "a",
    *,
    cpu: int = 4000,
    mem: int = 8192,
    used_cpu: int = 0,
    used_mem: int = 0,
    active: bool = True,
) -> placement.HostLoad:
    return placement.HostLoad(
        id=host_id,
        zone=zone,
        active=active,
        vcpu_millis=cpu,
        mem_mib=mem,
        used_vcpu_millis=used_cpu,
        used_mem_mib=used_mem,
    )


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    hosts: list[placement.HostLoad]
    want: str | None
    cpu: int = 250
    mem: int = 512
    zones: set[str] | None = None
    spread: dict[str, int] | None = None


CASES = [
    Case("no hosts at all", [], None),
    Case("the only host fits", [host("h1")], "h1"),
    Case(
        "best fit: the host left with the least free memory",
        [host("roomy", mem=16384), host("tight", mem=8192, used_mem=6000), host("mid", mem=8192)],
        "tight",
    ),
    Case(
        "best fit ignores the order hosts are given in",
        [host("tight", mem=8192, used_mem=6000), host("roomy", mem=16384)],
        "tight",
    ),
    Case(
        "equal free memory: the least free CPU wins",
        [host("more-cpu", cpu=8000), host("less-cpu", cpu=2000), host("mid-cpu", cpu=4000)],
        "less-cpu",
    ),
    Case(
        "equal free memory and CPU: the smallest id wins",
        [host("h3"), host("h1"), host("h2")],
        "h1",
    ),
    Case(
        "an exact fit is taken",
        [host("exact", cpu=1000, mem=1024, used_cpu=500, used_mem=512), host("big", mem=65536)],
        "exact",
        cpu=500,
        mem=512,
    ),
    Case(
        "a host short of memory by one MiB is skipped",
        [host("short", mem=1024, used_mem=513), host("ok", mem=65536)],
        "ok",
    ),
    Case(
        "a host short of CPU by one milli is skipped",
        [host("short", cpu=1000, used_cpu=751, mem=1024), host("ok", mem=65536)],
        "ok",
    ),
    Case(
        "nothing fits: None",
        [host("h1", mem=1024, used_mem=1000), host("h2", cpu=500, used_cpu=400)],
        None,
    ),
    Case("too big for every host: None", [host("h1"), host("h2")], None, mem=16384),
    Case(
        "a draining host is skipped even when it is the best fit",
        [host("draining", mem=1024, active=False), host("active", mem=65536)],
        "active",
    ),
    Case(
        "only draining hosts: None",
        [host("d1", active=False), host("d2", active=False)],
        None,
    ),
    Case(
        "zone restriction: hosts of other zones are not considered",
        [host("a1", "a", mem=1024), host("b1", "b", mem=65536)],
        "b1",
        zones={"b"},
    ),
    Case(
        "zone restriction with several zones allowed: best fit among them",
        [host("a1", "a", mem=1024), host("b1", "b", mem=4096), host("c1", "c", mem=2048)],
        "c1",
        zones={"b", "c"},
    ),
    Case("a zone with no host: None", [host("a1", "a")], None, zones={"z"}),
    Case(
        "a zone whose hosts are full: None, not a host of another zone",
        [host("a1", "a", mem=1024, used_mem=1024), host("b1", "b")],
        None,
        zones={"a"},
    ),
    Case(
        "spread: the zone with the fewest group members wins over the best fit",
        [host("a1", "a", mem=1024), host("b1", "b", mem=65536)],
        "b1",
        spread={"a": 2, "b": 1},
    ),
    Case(
        "spread: a zone missing from the counts has zero members",
        [host("a1", "a", mem=1024), host("b1", "b", mem=65536)],
        "b1",
        spread={"a": 1},
    ),
    Case(
        "spread: tied zones fall back to best fit",
        [host("a1", "a", mem=65536), host("b1", "b", mem=1024), host("c1", "c", mem=2048)],
        "b1",
        spread={"a": 3, "b": 1, "c": 1},
    ),
    Case(
        "spread: the emptiest zone is skipped when it has no room",
        [host("a1", "a", mem=1024, used_mem=1024), host("b1", "b"), host("c1", "c")],
        "b1",
        spread={"a": 0, "b": 1, "c": 2},
    ),
    Case(
        "spread: an emptiest zone with only draining hosts is skipped",
        [host("a1", "a", active=False), host("b1", "b")],
        "b1",
        spread={"a": 0, "b": 5},
    ),
    Case(
        "spread within a zone restriction",
        [host("a1", "a"), host("b1", "b"), host("c1", "c")],
        "b1",
        zones={"b", "c"},
        spread={"a": 0, "b": 1, "c": 2},
    ),
    Case(
        "spread, best fit inside the chosen zone, then id",
        [host("b2", "b"), host("b1", "b"), host("b3", "b", mem=4096), host("a1", "a", mem=1024)],
        "b3",
        spread={"a": 1, "b": 0},
    ),
    Case(
        "empty spread counts: plain best fit",
        [host("a1", "a", mem=65536), host("b1", "b", mem=1024)],
        "b1",
        spread={},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_choose(case: Case) -> None:
    chosen = placement.choose(
        case.hosts, vcpu_millis=case.cpu, mem_mib=case.mem, zones=case.zones, spread=case.spread
    )
    assert (chosen.id if chosen else None) == case.want


def test_choose_accepts_any_iterable_and_returns_the_host_itself() -> None:
    hosts = [host("h1", mem=2048), host("h2", mem=4096)]
    chosen = placement.choose(iter(hosts), vcpu_millis=250, mem_mib=512)
    assert chosen is hosts[0]


def test_free_resources_are_capacity_minus_used() -> None:
    load = host("h", cpu=4000, mem=8192, used_cpu=1500, used_mem=3000)
    assert (load.free_vcpu_millis, load.free_mem_mib) == (2500, 5192)


def test_filling_hosts_one_by_one() -> None:
    """Repeated placement fills one host before starting on the next."""
    hosts = {h.id: h for h in (host("h1", mem=2048), host("h2", mem=2048))}
    placed = []
    for _ in range(4):
        chosen = placement.choose(hosts.values(), vcpu_millis=250, mem_mib=1024)
        assert chosen is not None
        placed.append(chosen.id)
        hosts[chosen.id] = dataclasses.replace(
            chosen,
            used_vcpu_millis=chosen.used_vcpu_millis + 250,
            used_mem_mib=chosen.used_mem_mib + 1024,
        )
    assert placed == ["h1", "h1", "h2", "h2"]
    assert placement.choose(hosts.values(), vcpu_millis=250, mem_mib=1024) is None


# plan: host, subnet pool and wanted address for a whole spec

POOLS_CIDRS = {
    "sub-a1": ("10.0.0.0/28", "a"),
    "sub-a2": ("10.0.1.0/28", "a"),
    "sub-b1": ("10.0.2.0/28", "b"),
}


def pools(used: dict[str, int] | None = None) -> dict[str, ipam.SubnetPool]:
    """Three /28 pools (11 addresses each); ``used`` takes that many from a pool."""
    made = {
        pool_id: ipam.SubnetPool(pool_id, ipaddress.IPv4Network(cidr), zone)
        for pool_id, (cidr, zone) in POOLS_CIDRS.items()
    }
    for pool_id, count in (used or {}).items():
        for _ in range(count):
            made[pool_id].allocate()
    return made


def spec(**fields: Any) -> models.MicroVMSpec:
    return models.MicroVMSpec.model_validate(
        {"vcpu_millis": 250, "mem_mib": 512, "containers": [{"name": "c", "image": "i"}], **fields}
    )


TWO_ZONES = [host("ha", "a", mem=4096), host("hb", "b", mem=8192)]


@pytest.mark.parametrize(
    ("fields", "used", "want"),
    [
        ({}, {}, ("ha", "sub-a2", None)),  # best fit; pools tied on free: the largest id
        ({}, {"sub-a2": 1}, ("ha", "sub-a1", None)),  # the pool with the most free
        ({}, {"sub-a1": 1}, ("ha", "sub-a2", None)),
        ({"zone": "b"}, {}, ("hb", "sub-b1", None)),
        ({"subnet": "sub-b1"}, {}, ("hb", "sub-b1", None)),
        ({"subnet": "sub-a1"}, {"sub-a1": 5}, ("ha", "sub-a1", None)),
        ({"subnet": "sub-b1", "zone": "b"}, {}, ("hb", "sub-b1", None)),
        ({"private_ip": "10.0.2.9"}, {}, ("hb", "sub-b1", "10.0.2.9")),
        ({"private_ip": "10.0.1.4", "zone": "a"}, {}, ("ha", "sub-a2", "10.0.1.4")),
        ({"private_ip": "10.0.1.4", "subnet": "sub-a2"}, {}, ("ha", "sub-a2", "10.0.1.4")),
    ],
)
def test_plan(
    fields: dict[str, Any], used: dict[str, int], want: tuple[str, str, str | None]
) -> None:
    chosen, pool, wanted = placement.plan(
        spec(**fields), hosts=TWO_ZONES, pools=pools(used), spread=None, retry_after=5
    )
    assert (chosen.id, pool.id, str(wanted) if wanted else None) == want


def test_plan_with_spread_prefers_the_emptier_zone() -> None:
    chosen, pool, _ = placement.plan(
        spec(spread_group="web"), hosts=TWO_ZONES, pools=pools(), spread={"a": 1}, retry_after=5
    )
    assert (chosen.id, pool.id) == ("hb", "sub-b1")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"subnet": "sub-zz"}, "subnet", "unknown subnet sub-zz"),
        ({"subnet": "sub-a1", "zone": "b"}, "zone", "subnet sub-a1 is not in zone b"),
        ({"private_ip": "not-an-ip"}, "private_ip", "not-an-ip"),
        ({"private_ip": "192.168.9.9"}, "private_ip", "in none of the allowed subnets"),
        ({"private_ip": "10.0.2.9", "subnet": "sub-a1"}, "private_ip", "none of the allowed"),
        ({"private_ip": "10.0.2.9", "zone": "a"}, "private_ip", "none of the allowed"),
        ({"zone": "z"}, "zone", "no host in zone z"),
    ],
)
def test_plan_refuses_a_spec_no_fleet_state_could_satisfy(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(errors.InvalidSpec, match=message) as caught:
        placement.plan(spec(**fields), hosts=TWO_ZONES, pools=pools(), spread=None, retry_after=5)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("fields", "hosts", "used", "message"),
    [
        ({"mem_mib": 16384}, TWO_ZONES, {}, "no active host has 250m vCPU and 16384 MiB free"),
        ({"mem_mib": 8192, "zone": "a"}, TWO_ZONES, {}, "8192 MiB free in a$"),
        ({}, [host("ha", "a", active=False)], {}, "no active host"),
        ({"subnet": "sub-b1"}, TWO_ZONES, {"sub-b1": 11}, "no free address in zone b"),
    ],
)
def test_plan_says_insufficient_capacity_for_what_merely_does_not_fit_now(
    fields: dict[str, Any],
    hosts: list[placement.HostLoad],
    used: dict[str, int],
    message: str,
) -> None:
    with pytest.raises(errors.InsufficientCapacity, match=message) as caught:
        placement.plan(spec(**fields), hosts=hosts, pools=pools(used), spread=None, retry_after=7)
    assert caught.value.retry_after == 7
