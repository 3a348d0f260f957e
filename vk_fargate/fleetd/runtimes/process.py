"""The ``process`` runtime: each container is a process group inside the shim's
network namespace and cgroup (both joined by the shim before anything starts).

Init containers run one after another and must exit 0; then the app containers run
side by side, restarted per the restart policy with exponential back-off, as kubelet
does (reset after ``BACKOFF_RESET`` seconds of good running). A stop sends SIGTERM to
every container, waits the grace period, then SIGKILLs what is left.
On a cgroup v1 host each container instance starts inside a CPU accounting child
group of its own (``sandbox.container_group``), entered before ``exec``, so the daemon
can read the container's CPU time and list its processes; the group is removed when
the instance has ended.
Standard library only.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import functools
import os
import secrets
import signal
import time
from pathlib import Path

from vk_fargate.fleetd import crilog, sandbox

# A container that ran this long without failing starts its back-off over (kubelet: 10 min).
BACKOFF_RESET = 600.0
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
}
# How many instances of a container's log are kept: the current and the previous one.
KEPT_INSTANCES = 2


def exit_code(returncode: int) -> int:
    """A shell-style exit code: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class ProcessRuntime:
    """Runs one microVM's containers as local processes."""

    def __init__(self, vm_dir: Path, spec: sandbox.ShimSpec, status: sandbox.Status) -> None:
        self.vm_dir = vm_dir
        self.spec = spec
        self.status = status
        self._stopping = asyncio.Event()
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._failure: tuple[str, str] | None = None

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Run init containers, then the app containers, until they end or a stop."""
        stopper = asyncio.create_task(self._stop_when_asked(), name="process-runtime-stop")
        try:
            self.status.phase("init")
            for container in self.spec["init_containers"]:
                if not await self._run_init(container):
                    return
            if self._stopping.is_set():
                return
            self.status.phase("running")
            await asyncio.gather(*(self._supervise(c) for c in self.spec["containers"]))
        finally:
            stopper.cancel()
            self.status.phase("exited", *self._outcome())

    def _outcome(self) -> tuple[str | None, str | None]:
        codes = [c.get("exit_code") for c in self.status.doc["containers"]]
        if self._failure is not None:
            return self._failure
        if self._stopping.is_set():
            return "Stopped", None
        if codes and all(code == 0 for code in codes):
            return "Completed", None
        return "Error", None

    async def _run_init(self, container: sandbox.ShimContainer) -> bool:
        """Run an init container to success (retrying unless Never); False to give up."""
        backoff = self.spec["backoff_initial_seconds"]
        while not self._stopping.is_set():
            code = await self._run_once(container)
            if code == 0:
                return True
            if code is None or self.spec["restart_policy"] == "Never" or self._stopping.is_set():
                self._failure = ("InitError", f"init container {container['name']} failed")
                return False
            self.status.restarting(container["name"], backoff)
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.spec["backoff_max_seconds"])
        return False

    async def _supervise(self, container: sandbox.ShimContainer) -> None:
        backoff = self.spec["backoff_initial_seconds"]
        policy = self.spec["restart_policy"]
        while not self._stopping.is_set():
            began = time.monotonic()
            code = await self._run_once(container)
            if code is None or self._stopping.is_set():
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return
            if time.monotonic() - began > BACKOFF_RESET:
                backoff = self.spec["backoff_initial_seconds"]
            self.status.restarting(container["name"], backoff)
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.spec["backoff_max_seconds"])

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run_once(self, container: sandbox.ShimContainer) -> int | None:
        """One instance of ``container``: its exit code, or None when it cannot start."""
        name = container["name"]
        argv = container["argv"]
        if argv is None:
            self.status.waiting(name, "ErrImagePull", container.get("error"))
            return None
        instance = self.status.container(name)["restart_count"]
        log = sandbox.log_path(self.vm_dir, name, instance)
        log.parent.mkdir(parents=True, exist_ok=True)
        _prune(log.parent, instance)
        cwd = self._working_dir(container)
        env = {**BASE_ENV, "HOSTNAME": self.spec["id"], **container["env"]}
        group = self._container_group(name, instance)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=functools.partial(_prepare_child, group),
            )
        except OSError as exc:
            _remove_group(group)
            self.status.terminated(name, 128, "StartError", f"cannot start {argv[0]}: {exc}")
            return 128
        self._procs[name] = proc
        self.status.running(name, f"vkfargate://{secrets.token_hex(16)}")
        assert proc.stdout is not None and proc.stderr is not None
        with log.open("a", encoding="utf-8") as out:
            await asyncio.gather(
                _pump(proc.stdout, crilog.Writer(out, "stdout")),
                _pump(proc.stderr, crilog.Writer(out, "stderr")),
            )
            returncode = await proc.wait()
        del self._procs[name]
        _remove_group(group)
        code = exit_code(returncode)
        reason = "Completed" if code == 0 else ("OOMKilled" if self._oom(code) else "Error")
        self.status.terminated(name, code, reason)
        return code

    def _container_group(self, name: str, instance: int) -> Path | None:
        """The instance's CPU accounting group, made now; None where there is none."""
        accounting = sandbox.accounting_group(self.spec["cgroups"])
        if accounting is None:
            return None
        group = sandbox.container_group(accounting, name, instance)
        try:
            group.mkdir(exist_ok=True)
        except OSError:
            return None
        return group

    def _oom(self, code: int) -> bool:
        """A SIGKILL while the memory cgroup recorded an OOM kill."""
        if code != 128 + signal.SIGKILL:
            return False
        for group in self.spec["cgroups"]:
            events = Path(group) / "memory.events"
            oom_control = Path(group) / "memory.oom_control"
            for path in (events, oom_control):
                with contextlib.suppress(OSError):
                    for line in path.read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill" and value.strip() != "0":
                            return True
        return False

    def _working_dir(self, container: sandbox.ShimContainer) -> str:
        wanted = container["working_dir"]
        if wanted and Path(wanted).is_dir():
            return wanted
        root = self.vm_dir / "rootfs"
        root.mkdir(exist_ok=True)
        return str(root)

    async def _stop_when_asked(self) -> None:
        await self._stopping.wait()
        self.status.phase("stopping")
        stop = sandbox.read_json(self.vm_dir / "stop.json") or {}
        grace = float(stop.get("grace_seconds", self.spec["termination_grace_seconds"]))
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._procs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: signal.Signals) -> None:
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)


def _die_with_shim() -> None:
    """PR_SET_PDEATHSIG: a container never outlives its shim, as a VM's processes."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def _prepare_child(group: Path | None) -> None:
    """Runs in the container's process between fork and exec."""
    _die_with_shim()
    if group is not None:
        with contextlib.suppress(OSError):  # without it the container only lacks stats
            (group / "cgroup.procs").write_text(str(os.getpid()))


def _remove_group(group: Path | None) -> None:
    """Delete an ended instance's accounting group (kept while processes linger)."""
    if group is not None:
        with contextlib.suppress(OSError):
            group.rmdir()


async def _pump(stream: asyncio.StreamReader, writer: crilog.Writer) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(65536):
        writer.feed(decoder.decode(chunk))
    writer.feed(decoder.decode(b"", final=True))
    writer.close()


def _prune(folder: Path, current: int) -> None:
    for old in folder.glob("*.log"):
        with contextlib.suppress(ValueError, OSError):
            if int(old.stem) <= current - KEPT_INSTANCES:
                old.unlink()
