"""Private IP addresses for microVMs, from the configured subnets.

Like a VPC subnet, the first four addresses and the last one are reserved (the
network, the gateway the bridge holds, two more, and the broadcast). Addresses are
handed out round-robin after the last one given, so a freed address is not reused at
once: a new pod does not inherit a just-deleted pod's IP (or its node name, whose
cleanup may still be under way). A freed address also rests for ``quarantine``
seconds; it is handed out sooner only when no other address is free, the one freed
longest ago first. The cursor and the release times are the pool's ``state``, kept
by fleetd across restarts (a cursor that restarted at the subnet's head would hand
out the addresses freed just before the restart first).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from vk_fargate import errors

# Addresses at the start of each subnet that are never handed out (AWS reserves 4).
RESERVED_HEAD = 4


class SubnetPool:
    """The addresses of one subnet and which of them are in use."""

    def __init__(
        self, subnet_id: str, cidr: ipaddress.IPv4Network, zone: str, *, quarantine: float = 0.0
    ) -> None:
        self.id = subnet_id
        self.cidr = cidr
        self.zone = zone
        self.quarantine = quarantine
        self.used: set[ipaddress.IPv4Address] = set()
        self.released: dict[ipaddress.IPv4Address, float] = {}  # address -> when (epoch s)
        self._first = int(cidr.network_address) + RESERVED_HEAD
        self._last = int(cidr.broadcast_address) - 1
        self._cursor = self._first - 1

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.cidr.network_address + 1

    @property
    def size(self) -> int:
        return self._last - self._first + 1

    @property
    def free(self) -> int:
        return self.size - len(self.used)

    def usable(self, address: ipaddress.IPv4Address) -> bool:
        return self._first <= int(address) <= self._last

    def allocate(
        self, wanted: ipaddress.IPv4Address | None = None, *, now: float = 0.0
    ) -> ipaddress.IPv4Address:
        """Take ``wanted`` (must be usable and free) or the next free address at ``now``."""
        if wanted is not None:
            if not self.usable(wanted):
                raise errors.InvalidSpec(
                    f"{wanted} is not a usable address of {self.id} ({self.cidr})",
                    field="private_ip",
                )
            if wanted in self.used:
                raise errors.InvalidSpec(
                    f"{wanted} is already in use in {self.id}", field="private_ip"
                )
            return self._take(wanted)
        resting: list[ipaddress.IPv4Address] = []
        for step in range(1, self.size + 1):
            candidate = ipaddress.IPv4Address(
                self._first + (self._cursor - self._first + step) % self.size
            )
            if candidate in self.used:
                continue
            if now - self.released.get(candidate, -self.quarantine) < self.quarantine:
                resting.append(candidate)
                continue
            self._cursor = int(candidate)
            return self._take(candidate)
        if resting:
            return self._take(min(resting, key=lambda a: self.released[a]))
        raise errors.InsufficientCapacity(f"subnet {self.id} ({self.cidr}) has no free address")

    def _take(self, address: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        self.used.add(address)
        self.released.pop(address, None)
        return address

    def release(self, address: ipaddress.IPv4Address, *, now: float = 0.0) -> None:
        if address in self.used:
            self.used.discard(address)
            self.released[address] = now
        for old in [a for a, when in self.released.items() if now - when >= self.quarantine]:
            del self.released[old]

    def state(self) -> dict[str, Any]:
        """What survives a restart: the cursor and the addresses still resting."""
        return {
            "cursor": str(ipaddress.IPv4Address(self._cursor))
            if self.usable(ipaddress.IPv4Address(self._cursor))
            else None,
            "released": {str(a): when for a, when in self.released.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a ``state()`` (entries outside this subnet are ignored)."""
        cursor = state.get("cursor")
        if cursor and self.usable(ipaddress.IPv4Address(cursor)):
            self._cursor = int(ipaddress.IPv4Address(cursor))
        for address, when in (state.get("released") or {}).items():
            ip = ipaddress.IPv4Address(address)
            if self.usable(ip) and ip not in self.used:
                self.released[ip] = float(when)
