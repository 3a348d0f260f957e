"""A container's volume mounts for the fleet, as the kubelet makes them (its
``makeMounts``): ``subPathExpr`` expanded from the container's environment, mounts of
files volumes read-only. Pure; beside ``volumes``, which resolves what is mounted.
"""

from __future__ import annotations

from typing import Any

from vk_fargate.fargate import environment
from vk_fargate.fleet import images, models

JSON = dict[str, Any]


def mounts(
    container: JSON, env: list[models.EnvVar], files: frozenset[str] = frozenset()
) -> list[models.VolumeMount]:
    """The container's volume mounts; a ``subPathExpr`` expanded from its environment
    (the kubelet's ExpandContainerVolumeMounts: a variable unset or empty is an error,
    ``environment.ConfigError``, and the container waits in CreateContainerConfigError).
    Mounts of the ``files`` volumes are read-only whatever they say, as the kubelet
    mounts configMap, secret, downwardAPI and projected volumes."""
    out = []
    for mount in container.get("volumeMounts") or []:
        sub_path = mount.get("subPath") or None
        expr = mount.get("subPathExpr")
        if expr:
            sub_path = _expand(expr, env) or None
        out.append(
            models.VolumeMount(
                name=mount["name"],
                mount_path=mount["mountPath"],
                sub_path=sub_path,
                read_only=bool(mount.get("readOnly")) or mount["name"] in files,
            )
        )
    return out


def _expand(expr: str, env: list[models.EnvVar]) -> str:
    values = {e.name: e for e in env}
    missing: set[str] = set()

    def lookup(name: str) -> str | None:
        var = values.get(name)
        if var is None or not var.value or var.expand:
            missing.add(name)
            return ""
        return var.value

    expanded = images.expand(expr, lookup)
    if missing:
        raise environment.ConfigError(f"missing value for {', '.join(sorted(missing))}")
    return expanded
