"""What Fargate refuses to run (``fargate-facts.md`` §4), in EKS's words. Pure.

A refused pod stays Pending and unbound with a ``FailedScheduling`` event from
fargate-scheduler carrying the message returned here.
"""

from __future__ import annotations

from typing import Any

PREFIX = "Pod not supported on Fargate: "
# Volume types a Fargate pod may use; node-bound ones (hostPath, ...) are refused.
SUPPORTED_VOLUMES = frozenset(
    {
        "emptyDir",
        "configMap",
        "secret",
        "projected",
        "downwardAPI",
        "persistentVolumeClaim",
        "ephemeral",
        "csi",
        "nfs",
    }
)
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "aws.amazon.com/neuron")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def refusal(spec: dict[str, Any]) -> str | None:
    """EKS's message for why this pod spec cannot run on Fargate, or None."""
    reasons = []
    containers = _containers(spec)
    if any((c.get("securityContext") or {}).get("privileged") for c in containers):
        reasons.append("invalid SecurityContext fields: Privileged")
    fields = [
        name
        for key, name in (
            ("hostNetwork", "HostNetwork"),
            ("hostPID", "HostPID"),
            ("hostIPC", "HostIPC"),
        )
        if spec.get(key)
    ]
    if any(p.get("hostPort") or p.get("hostIP") for c in containers for p in c.get("ports") or []):
        fields.append("port contains HostIP or HostPort")
    if any(
        m.get("mountPropagation") not in (None, "None")
        for c in containers
        for m in c.get("volumeMounts") or []
    ):
        fields.append("MountPropagation")
    if fields:
        reasons.append(f"fields not supported: {', '.join(fields)}")
    unsupported = [
        f"{v.get('name')} is of an unsupported volume Type"
        for v in spec.get("volumes") or []
        if not any(kind in v for kind in SUPPORTED_VOLUMES)
    ]
    if unsupported:
        reasons.append(f"volumes not supported: {', '.join(unsupported)}")
    gpus = sorted(
        {
            name
            for c in containers
            for section in ("limits", "requests")
            for name in ((c.get("resources") or {}).get(section) or {})
            if name in GPU_RESOURCES
        }
    )
    if gpus:
        reasons.append(f"resources not supported: {', '.join(gpus)}")
    return PREFIX + ", ".join(reasons) if reasons else None
