"""The pod fields vk-fargate cannot honour yet, named so that nothing is ignored without
a word. Pure.

``refused`` are fields whose absence would change what the pod does (a device, a
Windows image, a claim on hardware): the pod stays Pending with ``FailedScheduling``,
as for Fargate's own refusals. ``not_applied`` are fields the pod still runs without,
said in one ``PodFieldsNotApplied`` warning when it is placed (securityContext fields
have their own warning, ``security.not_applied``). The README's pod-field table lists
every field with what vk-fargate does with it.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def _containers(spec: JSON) -> list[tuple[str, JSON]]:
    return [(kind, c) for kind in ("initContainers", "containers") for c in spec.get(kind) or []]


def refused(spec: JSON) -> list[str]:
    """Fields the pod cannot run without, as ``field (why)``."""
    found = []
    if ((spec.get("os") or {}).get("name") or "linux") != "linux":
        found.append(f"os.name {spec['os']['name']} (Fargate runs Linux only)")
    if spec.get("dnsPolicy") == "ClusterFirstWithHostNet":
        found.append(
            "dnsPolicy ClusterFirstWithHostNet (Fargate pods cannot use the host's network)"
        )
    if spec.get("resourceClaims"):
        found.append("resourceClaims (no devices to allocate in a microVM)")
    for kind, c in _containers(spec):
        if c.get("volumeDevices"):
            found.append(f"{kind}[{c['name']}].volumeDevices (no block devices)")
        if (c.get("resources") or {}).get("claims"):
            found.append(f"{kind}[{c['name']}].resources.claims (no devices to allocate)")
    return found


def not_applied(spec: JSON) -> list[str]:
    """Fields the pod runs without, as ``field`` or ``field (why)``."""
    found = []
    if spec.get("shareProcessNamespace"):
        found.append("shareProcessNamespace (each container has its own PID namespace)")
    if spec.get("hostUsers") is False:
        found.append("hostUsers (no user namespaces: uids are the host's)")
    if spec.get("runtimeClassName"):
        found.append(f"runtimeClassName {spec['runtimeClassName']} (every pod is a microVM)")
    placement = [
        f for f in ("nodeSelector", "affinity", "topologySpreadConstraints") if spec.get(f)
    ]
    if placement:
        found.append(
            f"{'/'.join(placement)} (each pod gets a node of its own; its microVMs are "
            "spread across zones by owner instead)"
        )
    if spec.get("priorityClassName"):
        found.append("priorityClassName (no preemption: every pod gets a microVM of its own)")
    if spec.get("resources"):
        found.append("resources (pod-level: the pod is sized from its containers)")
    return found
