"""Which host gets a microVM: pure bin-packing with optional zone spreading.

Best fit: among active hosts with room (in the allowed zones), the one left with the
least free memory, then CPU, then by id, so hosts fill up one by one and big
microVMs still find empty hosts. With a spread group, only the zones holding the
fewest members of that group are considered first (how replicas end up in all zones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping


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
