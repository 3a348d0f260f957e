"""Sizing a pod the way EKS Fargate does (``fargate-facts.md`` §1). Pure.

The pod's request is, per resource, the larger of the biggest init container and the
sum of the long-running containers (sidecars, i.e. init containers with
``restartPolicy: Always``, count as long-running). A container's requests fall back
to its limits. Fargate adds 256 MiB for its own agents, then rounds up to the first
vCPU/memory combination that covers both. That combination is what runs and what
is billed, shown as ``CapacityProvisioned: 2vCPU 4GB``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from vk_fargate.fargate import quantities

OVERHEAD_MIB = 256  # kubelet, kube-proxy and containerd inside the microVM
GIB = 1024
EPHEMERAL_DEFAULT_GIB = 20
EPHEMERAL_MAX_GIB = 175

# (vCPU in millicores, memory choices in GB): EKS's table.
TABLE: tuple[tuple[int, tuple[int | float, ...]], ...] = (
    (250, (0.5, 1, 2)),
    (500, (1, 2, 3, 4)),
    (1000, tuple(range(2, 9))),
    (2000, tuple(range(4, 17))),
    (4000, tuple(range(8, 31))),
    (8000, tuple(range(16, 61, 4))),
    (16000, tuple(range(32, 121, 8))),
)


class TooLarge(ValueError):
    """The pod asks for more than the largest Fargate combination."""


@dataclasses.dataclass(frozen=True)
class Size:
    vcpu_millis: int
    mem_mib: int
    ephemeral_gib: int = EPHEMERAL_DEFAULT_GIB

    @property
    def capacity_provisioned(self) -> str:
        """EKS's annotation text: ``0.25vCPU 0.5GB``, ``2vCPU 4GB``."""
        return f"{_number(self.vcpu_millis / 1000)}vCPU {_number(self.mem_mib / GIB)}GB"


@dataclasses.dataclass(frozen=True)
class Request:
    cpu_millis: int
    mem_mib: int
    ephemeral_mib: int


def _number(value: float) -> str:
    return f"{value:g}"


def combinations() -> Iterator[Size]:
    for vcpu, memories in TABLE:
        for gb in memories:
            yield Size(vcpu, int(gb * GIB))


def _container_request(container: dict[str, Any]) -> Request:
    resources = container.get("resources") or {}
    requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return Request(
        quantities.millicores(requests.get("cpu", 0)),
        quantities.mebibytes(requests.get("memory", 0)),
        quantities.mebibytes(requests.get("ephemeral-storage", 0)),
    )


def pod_request(spec: dict[str, Any]) -> Request:
    """The pod's effective request (before overhead and rounding)."""
    long_running = [_container_request(c) for c in spec.get("containers") or []]
    init_peak = Request(0, 0, 0)
    sidecars: list[Request] = []
    for init in spec.get("initContainers") or []:
        request = _container_request(init)
        if init.get("restartPolicy") == "Always":
            sidecars.append(request)
            continue
        # A plain init container runs beside the sidecars started before it.
        beside = [*sidecars, request]
        init_peak = Request(
            max(init_peak.cpu_millis, sum(r.cpu_millis for r in beside)),
            max(init_peak.mem_mib, sum(r.mem_mib for r in beside)),
            max(init_peak.ephemeral_mib, sum(r.ephemeral_mib for r in beside)),
        )
    steady = [*long_running, *sidecars]
    return Request(
        max(init_peak.cpu_millis, sum(r.cpu_millis for r in steady)),
        max(init_peak.mem_mib, sum(r.mem_mib for r in steady)),
        max(init_peak.ephemeral_mib, sum(r.ephemeral_mib for r in steady)),
    )


def size(spec: dict[str, Any]) -> Size:
    """The Fargate size of a pod spec; TooLarge when no combination covers it."""
    request = pod_request(spec)
    memory = request.mem_mib + OVERHEAD_MIB
    ephemeral = max(EPHEMERAL_DEFAULT_GIB, -(-request.ephemeral_mib // GIB))
    if ephemeral > EPHEMERAL_MAX_GIB:
        raise TooLarge(
            f"ephemeral storage {ephemeral} GiB is over the {EPHEMERAL_MAX_GIB} GiB maximum"
        )
    for candidate in combinations():
        if candidate.vcpu_millis >= request.cpu_millis and candidate.mem_mib >= memory:
            return dataclasses.replace(candidate, ephemeral_gib=ephemeral)
    raise TooLarge(
        f"the pod requests {request.cpu_millis}m vCPU and {memory} MiB memory (with "
        f"{OVERHEAD_MIB} MiB overhead); the largest Fargate size is 16 vCPU and 120 GB"
    )
