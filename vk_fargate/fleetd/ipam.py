"""Private IP addresses for microVMs, from the configured subnets.

Like a VPC subnet, the first four addresses and the last one are reserved (the
network, the gateway the bridge holds, two more, and the broadcast). Addresses are
handed out round-robin after the last one given, so a freed address is not reused at
once: a new pod does not inherit a just-deleted pod's IP (or its node name).
"""

from __future__ import annotations

import ipaddress

from vk_fargate import errors

# Addresses at the start of each subnet that are never handed out (AWS reserves 4).
RESERVED_HEAD = 4


class SubnetPool:
    """The addresses of one subnet and which of them are in use."""

    def __init__(self, subnet_id: str, cidr: ipaddress.IPv4Network, zone: str) -> None:
        self.id = subnet_id
        self.cidr = cidr
        self.zone = zone
        self.used: set[ipaddress.IPv4Address] = set()
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

    def allocate(self, wanted: ipaddress.IPv4Address | None = None) -> ipaddress.IPv4Address:
        """Take ``wanted`` (must be usable and free) or the next free address."""
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
            self.used.add(wanted)
            return wanted
        for step in range(1, self.size + 1):
            candidate = ipaddress.IPv4Address(
                self._first + (self._cursor - self._first + step) % self.size
            )
            if candidate not in self.used:
                self.used.add(candidate)
                self._cursor = int(candidate)
                return candidate
        raise errors.InsufficientCapacity(f"subnet {self.id} ({self.cidr}) has no free address")

    def release(self, address: ipaddress.IPv4Address) -> None:
        self.used.discard(address)
