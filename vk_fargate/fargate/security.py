"""A container's securityContext as it reaches the runtime, and the fields it cannot honour.
Pure.

The container's fields override its pod's (runAsUser, runAsGroup, runAsNonRoot), as
the kubelet merges them, and so does ``seccompProfile`` (``RuntimeDefault`` and
``Unconfined`` reach the runtime). ``privileged`` is refused earlier (``validation``),
as EKS refuses it. What vk-fargate does not apply yet (``Localhost`` seccomp profiles,
AppArmor profiles, SELinux options, fsGroup, supplementalGroups, sysctls, procMount)
is named, so the scheduler can say so in a warning event instead of ignoring it
without a word.
"""

from __future__ import annotations

from typing import Any

MERGED = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
SECCOMP_APPLIED = ("RuntimeDefault", "Unconfined")
POD_NOT_APPLIED = (
    "appArmorProfile",
    "seLinuxOptions",
    "fsGroup",
    "fsGroupChangePolicy",
    "supplementalGroups",
    "sysctls",
)
CONTAINER_NOT_APPLIED = ("appArmorProfile", "seLinuxOptions", "procMount")


def effective(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any] | None:
    """The fleet API's SecurityContext fields for ``container``, or None when unset."""
    pod = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    merged = {k: own.get(k, pod.get(k)) for k in MERGED}
    caps = own.get("capabilities") or {}
    seccomp = (merged["seccompProfile"] or {}).get("type")
    fields = {
        "run_as_user": merged["runAsUser"],
        "run_as_group": merged["runAsGroup"],
        "run_as_non_root": bool(merged["runAsNonRoot"]),
        "read_only_root_filesystem": bool(own.get("readOnlyRootFilesystem")),
        "allow_privilege_escalation": own.get("allowPrivilegeEscalation"),
        "capabilities_add": list(caps.get("add") or []),
        "capabilities_drop": list(caps.get("drop") or []),
        "seccomp_profile": seccomp if seccomp in SECCOMP_APPLIED else None,
    }
    unset: dict[str, Any] = {
        "run_as_user": None,
        "run_as_group": None,
        "run_as_non_root": False,
        "read_only_root_filesystem": False,
        "allow_privilege_escalation": None,
        "capabilities_add": [],
        "capabilities_drop": [],
        "seccomp_profile": None,
    }
    return None if fields == unset else fields


def not_applied(pod_spec: dict[str, Any]) -> list[str]:
    """The securityContext fields of the pod and its containers that are not applied."""
    pod = pod_spec.get("securityContext") or {}
    found = [f"securityContext.{k}" for k in POD_NOT_APPLIED if pod.get(k)]
    if _localhost(pod):
        found.append("securityContext.seccompProfile")
    for kind in ("initContainers", "containers"):
        for c in pod_spec.get(kind) or []:
            own = c.get("securityContext") or {}
            where = f"{kind}[{c['name']}].securityContext"
            found += [f"{where}.{k}" for k in CONTAINER_NOT_APPLIED if own.get(k)]
            if _localhost(own):
                found.append(f"{where}.seccompProfile")
    return found


def _localhost(context: dict[str, Any]) -> bool:
    """A seccomp profile the runtime does not apply (``Localhost``: a file on a node)."""
    profile = context.get("seccompProfile") or {}
    return bool(profile) and profile.get("type") not in SECCOMP_APPLIED
