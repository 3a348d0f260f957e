"""A bare-metal host as the fleet tracks it: its configured size, its drain state,
and how it is described through the API. Pure.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from vk_fargate.fleet import models
from vk_fargate.fleetd import cgroups, config, network, placement


class HostInfo:
    def __init__(self, cfg: config.Host) -> None:
        self.config = cfg
        self.state: models.HostState = "active"
        self.drain_deadline: datetime.datetime | None = None
        self.accelerator: str | None = None  # set for microvm hosts: "kvm" or "tcg"

    def restore(self, state: str, deadline: str | None) -> None:
        self.state = "draining" if state == "draining" else "active"
        self.drain_deadline = datetime.datetime.fromisoformat(deadline) if deadline else None

    def drain(self, deadline: datetime.datetime) -> None:
        self.state = "draining"
        self.drain_deadline = deadline

    def activate(self) -> None:
        self.state = "active"
        self.drain_deadline = None

    @property
    def deadline_text(self) -> str | None:
        return self.drain_deadline.isoformat() if self.drain_deadline else None

    def load(self, placed: Sequence[models.MicroVMSpec]) -> placement.HostLoad:
        return placement.HostLoad(
            id=self.config.id,
            zone=self.config.zone,
            active=self.state == "active",
            vcpu_millis=int(self.config.vcpus * 1000),
            mem_mib=self.config.mem_mib,
            used_vcpu_millis=sum(s.vcpu_millis for s in placed),
            used_mem_mib=sum(s.mem_mib for s in placed),
        )

    def model(
        self,
        *,
        placed: Sequence[models.MicroVMSpec],
        limits: cgroups.Mode,
        networking: network.Mode,
    ) -> models.Host:
        load = self.load(placed)
        notes = []
        if limits == "none":
            notes.append("CPU and memory limits are not enforced (no writable cgroup controllers)")
        elif limits == "cgroup-v1":
            notes.append(
                "limits enforced through cgroup v1 (cpu.cfs_quota_us, memory.limit_in_bytes)"
            )
        if networking == "nominal":
            notes.append("pod IPs are nominal: fleetd is not root, so nothing answers on them")
        if self.config.runtime == "microvm":
            notes.append(
                "service routes are not installed in microVM guests: pods there do not "
                "reach the API server through the kubernetes Service"
            )
        if self.accelerator == "tcg":
            notes.append("KVM is not usable here: microVMs run under QEMU software emulation (TCG)")
        return models.Host(
            id=self.config.id,
            zone=self.config.zone,
            state=self.state,
            runtime=self.config.runtime,
            capacity=models.Resources(vcpu_millis=load.vcpu_millis, mem_mib=load.mem_mib),
            allocated=models.Resources(
                vcpu_millis=load.used_vcpu_millis, mem_mib=load.used_mem_mib
            ),
            microvms=len(placed),
            limits=limits,
            networking=networking,
            notes=notes,
            drain_deadline=self.drain_deadline,
        )
