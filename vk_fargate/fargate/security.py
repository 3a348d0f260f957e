"""A container's securityContext as it reaches the runtime, and the fields it cannot honour.
Pure.

The container's fields override its pod's (runAsUser, runAsGroup, runAsNonRoot), as
the kubelet merges them. ``privileged`` is refused earlier (``validation``), as EKS
refuses it. What vk-fargate does not apply yet (seccomp and AppArmor profiles,
SELinux options, fsGroup, supplementalGroups, sysctls, procMount) is named, so the
scheduler can say so in a warning event instead of ignoring it without a word.
"""

from __future__ import annotations

from typing import Any

MERGED = ("runAsUser", "runAsGroup", "runAsNonRoot")
POD_NOT_APPLIED = (
    "seccompProfile",
    "appArmorProfile",
    "seLinuxOptions",
    "fsGroup",
    "fsGroupChangePolicy",
    "supplementalGroups",
    "sysctls",
)
CONTAINER_NOT_APPLIED = ("seccompProfile", "appArmorProfile", "seLinuxOptions", "procMount")


def effective(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any] | None:
    """The fleet API's SecurityContext fields for ``container``, or None when unset."""
    pod = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    merged = {k: own.get(k, pod.get(k)) for k in MERGED}
    caps = own.get("capabilities") or {}
    fields = {
        "run_as_user": merged["runAsUser"],
        "run_as_group": merged["runAsGroup"],
        "run_as_non_root": bool(merged["runAsNonRoot"]),
        "read_only_root_filesystem": bool(own.get("readOnlyRootFilesystem")),
        "allow_privilege_escalation": own.get("allowPrivilegeEscalation"),
        "capabilities_add": list(caps.get("add") or []),
        "capabilities_drop": list(caps.get("drop") or []),
    }
    unset: dict[str, Any] = {
        "run_as_user": None,
        "run_as_group": None,
        "run_as_non_root": False,
        "read_only_root_filesystem": False,
        "allow_privilege_escalation": None,
        "capabilities_add": [],
        "capabilities_drop": [],
    }
    return None if fields == unset else fields


def not_applied(pod_spec: dict[str, Any]) -> list[str]:
    """The securityContext fields of the pod and its containers that are not applied."""
    found = [
        f"securityContext.{k}"
        for k in POD_NOT_APPLIED
        if (pod_spec.get("securityContext") or {}).get(k)
    ]
    for kind in ("initContainers", "containers"):
        for c in pod_spec.get(kind) or []:
            own = c.get("securityContext") or {}
            found += [
                f"{kind}[{c['name']}].securityContext.{k}"
                for k in CONTAINER_NOT_APPLIED
                if own.get(k)
            ]
    return found
