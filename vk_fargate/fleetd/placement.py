"""Which host (and subnet) gets a microVM: pure bin-packing with optional zone spreading.

Best fit: among active hosts with room (in the allowed zones), the one left with the
least free memory, then CPU, then by id, so hosts fill up one by one and big
microVMs still find empty hosts. With a spread group, only the zones holding the
fewest members of that group are considered first (how replicas end up in all zones).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import ipam


@dataclasses.dataclass(frozen=True)
class HostLoad:
    """A host's capacity and what is already placed on it."""

    id: str
    zone: str
    active: bool
    vcpu_millis: int
    mem_mib: int
    used_vcpu_millis: int = 0
    used_mem_mib: int = 0

    @property
    def free_vcpu_millis(self) -> int:
        return self.vcpu_millis - self.used_vcpu_millis

    @property
    def free_mem_mib(self) -> int:
        return self.mem_mib - self.used_mem_mib


def choose(
    hosts: Iterable[HostLoad],
    *,
    vcpu_millis: int,
    mem_mib: int,
    zones: set[str] | None = None,
    spread: Mapping[str, int] | None = None,
) -> HostLoad | None:
    """The host for a microVM of this size, or None when nothing fits."""
    fits = [
        h
        for h in hosts
        if h.active
        and (zones is None or h.zone in zones)
        and h.free_vcpu_millis >= vcpu_millis
        and h.free_mem_mib >= mem_mib
    ]
    if not fits:
        return None
    if spread is not None:
        fewest = min(spread.get(h.zone, 0) for h in fits)
        fits = [h for h in fits if spread.get(h.zone, 0) == fewest]
    return min(
        fits,
        key=lambda h: (h.free_mem_mib - mem_mib, h.free_vcpu_millis - vcpu_millis, h.id),
    )


def plan(
    spec: models.MicroVMSpec,
    *,
    hosts: Sequence[HostLoad],
    pools: Mapping[str, ipam.SubnetPool],
    spread: Mapping[str, int] | None,
    retry_after: float,
) -> tuple[HostLoad, ipam.SubnetPool, ipaddress.IPv4Address | None]:
    """Where a spec goes: host, subnet pool, and the address it asked for (if any).

    Raises InvalidSpec for a spec no fleet state could satisfy (unknown subnet, zone
    without hosts, address outside the allowed subnets) and InsufficientCapacity for
    one that merely does not fit now.
    """
    zones: set[str] | None = {spec.zone} if spec.zone else None
    if spec.subnet is not None:
        if spec.subnet not in pools:
            raise errors.InvalidSpec(f"unknown subnet {spec.subnet}", field="subnet")
        zone = pools[spec.subnet].zone
        if zones is not None and zone not in zones:
            raise errors.InvalidSpec(
                f"subnet {spec.subnet} is not in zone {spec.zone}", field="zone"
            )
        zones = {zone}
    wanted = None
    if spec.private_ip is not None:
        try:
            wanted = ipaddress.IPv4Address(spec.private_ip)
        except ValueError as exc:
            raise errors.InvalidSpec(str(exc), field="private_ip") from exc
        owner = next((p for p in pools.values() if wanted in p.cidr), None)
        if (
            owner is None
            or spec.subnet not in (None, owner.id)
            or (zones and owner.zone not in zones)
        ):
            raise errors.InvalidSpec(
                f"{wanted} is in none of the allowed subnets", field="private_ip"
            )
        zones = {owner.zone}
    if zones is not None and not any(h.zone in zones for h in hosts):
        raise errors.InvalidSpec(f"no host in zone {', '.join(sorted(zones))}", field="zone")
    if wanted is None:  # only zones that still have an address can take the microVM
        addressable = {p.zone for p in pools.values() if p.free and spec.subnet in (None, p.id)}
        narrowed = addressable if zones is None else zones & addressable
        if not narrowed:
            where = f"zone {', '.join(sorted(zones))}" if zones else "any subnet"
            raise errors.InsufficientCapacity(
                f"no free address in {where}", retry_after=retry_after
            )
        zones = narrowed
    chosen = choose(
        hosts, vcpu_millis=spec.vcpu_millis, mem_mib=spec.mem_mib, zones=zones, spread=spread
    )
    if chosen is None:
        where = f" in {', '.join(sorted(zones))}" if zones else ""
        raise errors.InsufficientCapacity(
            f"no active host has {spec.vcpu_millis}m vCPU and {spec.mem_mib} MiB free{where}",
            retry_after=retry_after,
        )
    if wanted is not None:
        return chosen, next(p for p in pools.values() if wanted in p.cidr), wanted
    candidates = [
        p
        for p in pools.values()
        if p.zone == chosen.zone and spec.subnet in (None, p.id) and p.free
    ]
    if not candidates:
        raise errors.InsufficientCapacity(
            f"no free address in zone {chosen.zone}", retry_after=retry_after
        )
    return chosen, max(candidates, key=lambda p: (p.free, p.id)), None
