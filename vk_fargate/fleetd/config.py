"""The fleet daemon's configuration file (``fleet.yaml``), validated at start-up.

A bad file is a ``ConfigError`` naming the field, before anything is created. Subnets
must be private (RFC 1918 and friends), as Fargate's are; a public CIDR is refused.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from vk_fargate import errors, settings


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class Subnet(Model):
    id: str
    cidr: ipaddress.IPv4Network
    zone: str

    @pydantic.field_validator("cidr")
    @classmethod
    def _private(cls, cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not cidr.is_private or cidr.is_loopback or cidr.is_link_local:
            raise ValueError(f"{cidr} is not a private subnet (public subnets are not supported)")
        if cidr.prefixlen > 28:
            raise ValueError(f"{cidr} is too small (at most /28)")
        return cidr


class Host(Model):
    id: str
    zone: str
    vcpus: float = pydantic.Field(gt=0)
    mem_mib: int = pydantic.Field(gt=0)
    runtime: Literal["process", "microvm"] = "process"


class RegistryHost(Model):
    """How one registry is reached, as containerd's ``hosts.toml``: through a mirror
    (``http://`` for plain HTTP), verifying TLS with the CA files in ``ca_dir``."""

    mirror: str | None = pydantic.Field(default=None, pattern=r"^https?://[^/\s]+/?$")
    verify: bool = True
    ca_dir: Path | None = None


class Backoff(Model):
    initial_seconds: float = pydantic.Field(default=10.0, gt=0)
    max_seconds: float = pydantic.Field(default=300.0, gt=0)


class TLS(Model):
    cert_file: Path
    key_file: Path


class FleetConfig(Model):
    listen: str = "127.0.0.1:8400"
    token_file: Path | None = None
    tls: TLS | None = None
    # Serve plain HTTP beyond loopback: the bearer token and Secrets' values in clear.
    insecure_listen: bool = False
    state_dir: Path = Path("/var/lib/vk-fargate-fleetd")
    networking: Literal["auto", "netns", "nominal"] = "auto"
    subnets: list[Subnet] = pydantic.Field(min_length=1)
    hosts: list[Host] = pydantic.Field(min_length=1)
    # Registries by name as image references spell them (docker.io, quay.io, host:port).
    registries: dict[str, RegistryHost] = {}
    # Disk for pulled images; over it, images no microVM uses go, least recently used
    # first (unset: no limit).
    image_budget_mib: int | None = pydantic.Field(default=None, ge=1)
    restart_backoff: Backoff = Backoff()
    # Events kept for resuming streams; older cursors get 410 CursorExpired.
    event_retention: int = pydantic.Field(default=20000, ge=100)
    # Seconds a freed address rests before it is handed out again (sooner only when no
    # other address of its subnet is free): a client's cleanup of what it named after
    # the address (a node, a lease) finishes first.
    address_quarantine_seconds: float = pydantic.Field(default=300.0, ge=0)
    # Seconds a client is told to wait after 503 InsufficientCapacity.
    retry_after_seconds: int = pydantic.Field(default=5, ge=1)
    # Seconds between looks at disk emptyDir volumes' usage against their size limits
    # (the kubelet's eviction manager looks every 10 s).
    volume_check_seconds: float = pydantic.Field(default=10.0, gt=0)
    # Exec and port sessions open at once per microVM; more get 429 TooManySessions.
    max_sessions_per_microvm: int = pydantic.Field(default=64, ge=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_image_table(cls, data: Any) -> Any:
        if isinstance(data, dict) and "images" in data:
            raise ValueError(
                "images: the image table is gone, containers run from their images; "
                "name the registries they come from under registries (see config/fleet.yaml)"
            )
        return data

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        for kind, ids in (
            ("subnet", [s.id for s in self.subnets]),
            ("host", [h.id for h in self.hosts]),
        ):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{kind} ids must be unique")
        nets = [s.cidr for s in self.subnets]
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(f"subnets {a} and {b} overlap")
        zones = {s.zone for s in self.subnets}
        for host in self.hosts:
            if host.zone not in zones:
                raise ValueError(f"host {host.id}: no subnet in zone {host.zone}")
        host_part, _, port = self.listen.rpartition(":")
        if not host_part or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen must be HOST:PORT, not {self.listen!r}")
        if (
            self.tls is None
            and not self.insecure_listen
            and not settings.loopback(self.listen_host)
        ):
            raise ValueError(
                f"listen {self.listen!r} reaches beyond this machine without TLS: the bearer "
                "token and Secrets' values would cross the network in clear. Set tls "
                "(cert_file, key_file), or insecure_listen: true if you mean it"
            )
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def load(path: Path) -> FleetConfig:
    """Read and validate ``path``; ConfigError says what is wrong and where."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"cannot read fleet config {path}: {exc}") from exc
    try:
        return FleetConfig.model_validate(document or {})
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise errors.ConfigError(f"invalid fleet config {path}: {problems}") from exc
