"""The files a shim and the daemon share for one microVM, and the shim's status book.

``<vm_dir>/spec.json`` (``ShimSpec``, written by the daemon) says what to run;
``<vm_dir>/status.json`` (written by the shim, atomically, after every change) says
how it goes, with container statuses shaped like the API's ``ContainerStatus`` and
the last few ``events`` (numbered: a failed probe, a kill for it) for the daemon to
publish;
``<vm_dir>/stop.json`` carries the grace period of a stop; ``<vm_dir>/shim.pid``
names the shim (PID and start time), written by the template as it forks it, so a
daemon cut short between the fork and its own record still finds it;
``<vm_dir>/logs/<name>/<n>.log`` holds instance ``n`` of each container's output.
After each write the shim sends the microVM id as a datagram to the daemon's notify
socket (lost when the daemon is down; the daemon re-reads every status file when it
starts). On a cgroup v1 host each
container instance also gets a CPU accounting group, ``container_group``, that the
daemon reads for the container's stats.

Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

# Events a status file keeps for the daemon to read (it reads after every write).
KEPT_EVENTS = 32
Phase = Literal["starting", "init", "running", "stopping", "exited"]


class ShimContainer(TypedDict):
    name: str
    argv: list[str] | None  # None: the image could not be resolved, see ``error``
    error: NotRequired[str]
    reason: NotRequired[str]  # why it cannot run (ErrImagePull, ...), with ``error``
    env: dict[str, str]
    working_dir: str | None
    bundle: NotRequired[str]  # an OCI bundle: runc runs the container from its image
    image: NotRequired[str]  # the spec's image reference this entry was made for
    image_id: NotRequired[str]  # repo@sha256:... of the image it runs
    pulled: NotRequired[dict[str, Any]]  # the API's PullResult
    sub_paths: NotRequired[list[list[str]]]  # [mount path, volume, sub_path]: ``subpaths``


class ShimNetwork(TypedDict):
    ip: str
    prefix_len: int
    gateway: str
    bridge: str
    tap: NotRequired[str]


def mac_address(ip: str) -> str:
    """The MAC of the interface that holds pod address ``ip``: ``0a:58`` and the
    address's four bytes, as OVN-Kubernetes derives its pods' (locally administered,
    unicast). A freed address goes to a new pod in time; with a MAC of its own, the
    neighbour entries the host and other pods keep for that address would still name
    the old pod's MAC, and the new pod would stay unreachable from them until those
    expire (minutes, while other ports keep the bridge up). Fixed by the address, the
    MAC is the same for every pod that holds it, so no entry is ever stale."""
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *(int(part) for part in ip.split("."))))


class ShimSpec(TypedDict):
    id: str
    runtime: Literal["process", "microvm"]
    vcpu_millis: int
    mem_mib: int
    restart_policy: Literal["Always", "OnFailure", "Never"]
    termination_grace_seconds: int
    backoff_initial_seconds: float
    backoff_max_seconds: float
    init_containers: list[ShimContainer]
    containers: list[ShimContainer]
    netns: str | None
    cgroups: list[str]
    network: ShimNetwork | None
    notify_socket: str | None
    runc_root: NotRequired[str]  # runc's state folder (for containers with a bundle)
    cgroup_parent: NotRequired[str]  # the microVM's cgroup, relative to each hierarchy
    # Per container with probes: {"startup"|"liveness"|"readiness": the API's Probe}.
    probes: NotRequired[dict[str, dict[str, Any]]]
    # Per container: its post_start, pre_stop and termination_message_* (``hooks``).
    lifecycle: NotRequired[dict[str, dict[str, Any]]]
    # The init containers that are sidecars (restart_policy Always), in start order.
    sidecars: NotRequired[list[str]]
    # Per container with stdin or tty: {"stdin", "stdin_once", "tty"} (``attach``).
    attach: NotRequired[dict[str, dict[str, bool]]]


def iso(moment: datetime.datetime | None = None) -> str:
    return (moment or datetime.datetime.now(datetime.UTC)).isoformat()


def log_path(vm_dir: Path, container: str, instance: int) -> Path:
    return vm_dir / "logs" / container / f"{instance}.log"


def accounting_group(cgroups: list[str]) -> Path | None:
    """The microVM's cgroup v1 cpuacct folder, or None (cgroup v2, or no cgroups).

    Only v1 gets per-container groups: a child there holds nothing but CPU accounting,
    so the container stays in the microVM's cpu and memory groups. (On v2 a child
    group would take its processes out of the microVM's own ``cgroup.procs``.)
    """
    for folder in cgroups:
        if Path(folder, "cpuacct.usage").exists():
            return Path(folder)
    return None


def container_group(accounting: Path, name: str, instance: int) -> Path:
    """The CPU accounting group of instance ``instance`` of container ``name``."""
    return accounting / f"container-{name}-{instance}"


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` atomically, readable by its owner alone (a spec holds the
    containers' environment, Secrets' values included)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(document))
    tmp.replace(path)


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field
    22), or None if it is gone: with the PID, it names the process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 overall; fields[0] is field 3


def record_shim(vm_dir: Path, pid: int) -> None:
    """Write ``shim.pid``: the shim ``pid`` with its start time."""
    write_json(vm_dir / "shim.pid", [pid, process_start(pid)])


def recorded_shim(vm_dir: Path) -> tuple[int, int] | None:
    """The shim ``shim.pid`` names, as (PID, start time), if it is readable."""
    found = read_json(vm_dir / "shim.pid")
    if isinstance(found, list) and len(found) == 2 and all(isinstance(n, int) for n in found):
        return found[0], found[1]
    return None


class Status:
    """The shim's account of its microVM; ``flush`` publishes it."""

    def __init__(self, vm_dir: Path, spec: ShimSpec) -> None:
        self.vm_dir = vm_dir
        self._notify = spec["notify_socket"]
        self._id = spec["id"]
        self._events = 0
        self.doc: dict[str, Any] = {
            "shim_pid": os.getpid(),
            "phase": "starting",
            "reason": None,
            "message": None,
            "started_at": iso(),
            "finished_at": None,
            "init_containers": [self._fresh(c) for c in spec["init_containers"]],
            "containers": [self._fresh(c) for c in spec["containers"]],
        }

    @staticmethod
    def _fresh(container: ShimContainer) -> dict[str, Any]:
        fresh = {
            "name": container["name"],
            "state": "waiting",
            "reason": "ContainerCreating",
            "restart_count": 0,
            "ready": False,
            "started": False,
        }
        for key in ("image_id", "pulled"):
            if key in container:
                fresh[key] = container[key]
        return fresh

    def container(self, name: str) -> dict[str, Any]:
        for item in [*self.doc["init_containers"], *self.doc["containers"]]:
            if item["name"] == name:
                return item  # type: ignore[no-any-return]
        raise KeyError(name)

    def phase(self, phase: Phase, reason: str | None = None, message: str | None = None) -> None:
        self.doc.update(phase=phase, reason=reason, message=message)
        if phase == "exited":
            self.doc["finished_at"] = iso()
        self.flush()

    def waiting(self, name: str, reason: str, message: str | None = None) -> None:
        c = self.container(name)
        for key in ("exit_code", "started_at", "finished_at", "container_id"):
            c.pop(key, None)
        c.update(state="waiting", reason=reason, message=message, ready=False, started=False)
        self.flush()

    def running(
        self,
        name: str,
        container_id: str,
        *,
        started: bool = True,
        ready: bool = True,
        since: str | None = None,
    ) -> None:
        """It runs (since ``since``, its process's start, else now); ``started``/``ready``
        as its probes say before they ran (none: both)."""
        c = self.container(name)
        c.update(
            state="running",
            reason=None,
            message=None,
            started_at=since or iso(),
            container_id=container_id,
            started=started,
            ready=ready,
        )
        c.pop("exit_code", None)
        c.pop("finished_at", None)
        self.flush()

    def terminated(
        self, name: str, exit_code: int, reason: str, message: str | None = None
    ) -> None:
        c = self.container(name)
        c.update(
            state="terminated",
            exit_code=exit_code,
            reason=reason,
            message=message,
            finished_at=iso(),
            ready=False,
            started=False,
        )
        self.flush()

    def probed(self, name: str, **gates: bool) -> None:
        """A probe changed the container's ``ready`` or ``started``."""
        self.container(name).update(gates)
        self.flush()

    def event(self, name: str, reason: str, message: str, *, warning: bool = True) -> None:
        """Something the status does not say (a failed probe, a kill for it), for the
        daemon to publish: numbered, the last ``KEPT_EVENTS`` kept."""
        self._events += 1
        kept = self.doc.setdefault("events", [])
        kept.append(
            {
                "seq": self._events,
                "container": name,
                "reason": reason,
                "message": message,
                "warning": warning,
            }
        )
        del kept[:-KEPT_EVENTS]
        self.flush()

    def restarting(self, name: str, delay: float) -> None:
        """The container ended and comes back after ``delay`` seconds (CrashLoopBackOff)."""
        self._ended(name)
        self.waiting(name, "CrashLoopBackOff", f"back-off {delay:g}s restarting failed container")

    def replaced(self, name: str, entry: ShimContainer, *, ended: bool) -> None:
        """The container comes back from a new ``entry`` (its image changed in place);
        ``ended``: an instance of the old one ran and was stopped for it."""
        if ended:
            self._ended(name)
        c = self.container(name)
        for key in ("image_id", "pulled"):
            if key in entry:
                c[key] = entry[key]
            else:
                c.pop(key, None)
        self.waiting(name, "ContainerCreating")

    def _ended(self, name: str) -> None:
        """The instance that ran is the last termination; the next one counts a restart."""
        c = self.container(name)
        c["last_termination"] = {
            "exit_code": c.get("exit_code", 0),
            "reason": c.get("reason"),
            "message": c.get("message"),
            "started_at": c.get("started_at"),
            "finished_at": c.get("finished_at"),
        }
        c["restart_count"] += 1

    def flush(self) -> None:
        write_json(self.vm_dir / "status.json", self.doc)
        if self._notify:
            with (
                contextlib.suppress(OSError),
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
            ):
                sock.sendto(self._id.encode(), self._notify)
