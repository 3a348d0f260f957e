"""A container's OCI runtime spec (runc's ``config.json``), from the one umoci wrote
for its image and what the pod says. Pure.

umoci's spec already carries the image's user (resolved against the image's own
``/etc/passwd``), its rootfs and the usual ``/proc``, ``/dev`` and ``/sys`` mounts.
On top come the merged command, environment and working directory; the pod's name as
hostname; the pod's network namespace (shared by its containers) and the container's
own mount, PID, IPC and UTS namespaces; a cgroup under the microVM's, so its limits
apply; ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` bound from the
pod's files, as the kubelet does (unless a volume is mounted there); the pod's volumes
bound at their mount paths (runc makes each mount point inside the root, never
following a symlink out of it); containerd's default capabilities; and what the
securityContext says (user and group, read-only root, capabilities, no_new_privs, the
``RuntimeDefault`` seccomp filter of ``seccomp``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from vk_fargate.fleetd import seccomp

# What containerd (and Docker) give a container by default; runc's template has three.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
POD_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


@dataclasses.dataclass(frozen=True)
class Container:
    """What the pod decides about one container instance."""

    argv: list[str]
    env: list[tuple[str, str]]
    cwd: str
    hostname: str
    netns: str | None  # the pod's network namespace (a path); None: a new one
    cgroups_path: str | None  # e.g. /vk-fargate/<vm>/container-<name>-<n>
    pod_files: dict[str, str]  # /etc/hosts etc. -> the host file bound there
    run_as: tuple[int | None, int | None] = (None, None)  # uid, gid over the image's
    read_only: bool = False  # readOnlyRootFilesystem
    no_new_privileges: bool = False  # allowPrivilegeEscalation: false
    capabilities_add: tuple[str, ...] = ()
    capabilities_drop: tuple[str, ...] = ()  # "ALL" drops every default
    seccomp: bool = False  # seccompProfile RuntimeDefault
    # Pod volumes: (mount path, host folder, read-only), bound in that order.
    volumes: tuple[tuple[str, str, bool], ...] = ()


def capabilities(add: tuple[str, ...], drop: tuple[str, ...]) -> list[str]:
    """containerd's defaults with Kubernetes' add and drop (names with or without CAP_)."""

    def full(name: str) -> str:
        upper = name.upper()
        return upper if upper.startswith("CAP_") else f"CAP_{upper}"

    dropped = {full(n) for n in drop}
    kept = [] if "CAP_ALL" in dropped else [c for c in DEFAULT_CAPABILITIES if c not in dropped]
    return [*kept, *(full(n) for n in add if full(n) not in kept)]


def user(base: dict[str, Any], container: Container) -> tuple[int, int]:
    """The uid and gid the process runs as: the pod's, else the image's."""
    image = (base.get("process") or {}).get("user") or {}
    uid, gid = container.run_as
    return (
        uid if uid is not None else int(image.get("uid", 0)),
        gid if gid is not None else int(image.get("gid", 0)),
    )


def spec(base: dict[str, Any], container: Container) -> dict[str, Any]:
    """``base`` (umoci's ``config.json``) made into this container's spec."""
    out = copy.deepcopy(base)
    process = out.setdefault("process", {})
    process.update(
        terminal=False,
        args=list(container.argv),
        env=[f"{k}={v}" for k, v in container.env],
        cwd=container.cwd,
    )
    caps = capabilities(container.capabilities_add, container.capabilities_drop)
    process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    uid, gid = user(base, container)
    process["user"] = {**(process.get("user") or {}), "uid": uid, "gid": gid}
    if container.run_as[0] is not None and container.run_as[1] is None:
        process["user"].pop("additionalGids", None)
    process["noNewPrivileges"] = container.no_new_privileges
    out.setdefault("root", {})["readonly"] = container.read_only
    if container.seccomp:
        out.setdefault("linux", {})["seccomp"] = seccomp.runtime_default()
    out["hostname"] = container.hostname
    linux = out.setdefault("linux", {})
    namespaces = [n for n in linux.get("namespaces") or [] if n.get("type") != "network"]
    network: dict[str, str] = {"type": "network"}
    if container.netns:
        network["path"] = container.netns
    linux["namespaces"] = [*namespaces, network]
    if container.cgroups_path:
        linux["cgroupsPath"] = container.cgroups_path
    own = {destination for destination, _, _ in container.volumes}  # over the kubelet's
    pod_files = {k: v for k, v in container.pod_files.items() if k not in own}
    mounts = [m for m in out.get("mounts") or [] if m.get("destination") not in {*pod_files, *own}]
    for destination, source in sorted(pod_files.items()):
        mounts.append(
            {
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rprivate", "rw"],
            }
        )
    for destination, source, read_only in container.volumes:
        mounts.append(
            {
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rprivate", "ro" if read_only else "rw"],
            }
        )
    out["mounts"] = mounts
    return out
