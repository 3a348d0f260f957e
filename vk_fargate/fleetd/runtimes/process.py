"""The ``process`` runtime: each container runs from its image's OCI bundle under
runc, in the pod's network namespace and under the microVM's cgroups.

Init containers run one after another and must exit 0; then the app containers run
side by side, restarted per the restart policy with exponential back-off, as kubelet
does (reset after ``BACKOFF_RESET`` seconds of good running). Sidecars (init
containers with restart_policy Always, ``sidecars``) start in their place among the
init containers, run on beside the app containers, restarted always, and stop after
them. A stop sends SIGTERM wave after wave (``sidecars.stop_waves``) within the grace
period, then SIGKILLs what is left.
``reload`` (the shim's SIGHUP) takes a new ``spec.json``: an app container whose entry
changed (a new image, in a new bundle) is stopped as at a stop, but alone, and started
again from its new entry at once, as the kubelet restarts a container whose image
changed; its old bundle is then removed. Init containers are not run again.
Each running instance has its probes run beside it (``probes``): a failed liveness or
startup probe stops it as a replacement does, and the restart policy decides the rest.
Its lifecycle hooks and termination message are ``hooks``': postStart before it is
reported running, preStop before each SIGTERM it gets (a stop, a kill for a probe, a
replacement), its termination file bound in and read as it ended.
Each container instance gets a cgroup of its own under the microVM's
(``container-<name>-<n>``, see ``sandbox.container_group``), so the daemon can read
the container's CPU time and list its processes.
Standard library only.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vk_fargate.fleetd import (
    attach,
    crilog,
    hooks,
    probes,
    rootfs,
    sandbox,
    sidecars,
    streams,
    subpaths,
)

# A container that ran this long without failing starts its back-off over (kubelet: 10 min).
BACKOFF_RESET = 600.0
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
        self._live: set[str] = set()  # containers runc is making or that still run
        self._pids: dict[str, int] = {}  # name -> its running process (a child of ours)
        self._hooks: dict[str, hooks.Hooks] = {}  # name -> its running instance's hooks
        self._killing = False  # the grace period of a stop is over
        self._failure: tuple[str, str] | None = None
        self._sidecars: list[str] = list(spec.get("sidecars", []))
        self._apps = [c["name"] for c in spec["containers"]]
        self._winding = asyncio.Event()  # the app containers have ended for good
        self._entries = {c["name"]: c for c in self._long_running(spec)}  # current, per reload
        self._changed = {name: asyncio.Event() for name in self._entries}
        self._tasks: set[asyncio.Task[None]] = set()

    def request_stop(self) -> None:
        self._stopping.set()

    def _long_running(self, spec: sandbox.ShimSpec) -> list[sandbox.ShimContainer]:
        """The sidecars' entries and the app containers'."""
        side = [c for c in spec["init_containers"] if c["name"] in self._sidecars]
        return [*side, *spec["containers"]]

    def _ending(self, name: str) -> bool:
        """Whether ``name`` is not to run again: a stop, or a sidecar after the app
        containers have ended."""
        return self._stopping.is_set() or (name in self._sidecars and self._winding.is_set())

    def reload(self) -> None:
        """Take the sidecars' and app containers' entries of a new ``spec.json``: each
        changed one is stopped (TERM, the grace period, KILL) and started again from
        its entry."""
        spec: sandbox.ShimSpec | None = sandbox.read_json(self.vm_dir / "spec.json")
        if spec is None or self._stopping.is_set():
            return
        for entry in self._long_running(spec):
            name = entry["name"]
            if name in self._entries and entry != self._entries[name]:
                self._entries[name] = entry
                self._changed[name].set()
                self._replace(name)

    def _replace(self, name: str) -> None:
        """Stop the running instance of ``name``, if any, for its new entry."""
        pid = self._pids.get(name)
        if pid is None:  # none runs, or runc is making it: ``_run_image`` sees the change
            return
        task = asyncio.get_running_loop().create_task(
            self._stop_one(name, pid), name=f"replace-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _pod_ip(self) -> str:
        """Where probes without a host go: the microVM's IP (loopback without one)."""
        network = self.spec["network"]
        return network["ip"] if network else "127.0.0.1"

    def _kill_for_probe(self, name: str, pid: int, grace: float | None) -> None:
        """Stop instance ``pid`` of ``name`` (a failed liveness or startup probe): TERM,
        ``grace`` (else the microVM's), KILL; the restart policy takes it from there."""
        task = asyncio.get_running_loop().create_task(
            self._stop_one(name, pid, grace), name=f"probe-kill-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _stop_one(self, name: str, pid: int, grace: float | None = None) -> None:
        if grace is None:
            grace = self.spec["termination_grace_seconds"]
        deadline = await self._terminate(name, pid, grace)
        while self._pids.get(name) == pid and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._pids.get(name) == pid:  # still that instance: not reaped, so still ours
            _signal(pid, signal.SIGKILL)

    async def _terminate(self, name: str, pid: int, grace: float) -> float:
        """Run the preStop hook of instance ``pid`` of ``name`` (if any) within
        ``grace``, then SIGTERM it; when its SIGKILL is due (``time.monotonic``)."""
        hook = self._hooks.get(name)
        if hook is not None and self._pids.get(name) == pid:
            grace = await hook.pre_stop(grace)
        if self._pids.get(name) == pid:  # not yet reaped: still ours
            _signal(pid, signal.SIGTERM)
        return time.monotonic() + grace

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"{task.get_name()} failed: {task.exception()!r}", file=sys.stderr, flush=True)

    async def run(self) -> None:
        """Run init containers (starting sidecars in their place), then the app
        containers, until they end or a stop; then the sidecars are stopped."""
        stopper = asyncio.create_task(self._stop_when_asked(), name="process-runtime-stop")
        running: list[asyncio.Task[None]] = []
        try:
            self.status.phase("init")
            for container in self.spec["init_containers"]:
                name = container["name"]
                if name in self._sidecars:
                    task = asyncio.create_task(self._supervise(name), name=f"sidecar-{name}")
                    task.add_done_callback(self._task_done)  # a failure is printed
                    running.append(task)
                    if not await self._until_started(name):
                        return
                elif not await self._run_init(container):
                    return
            if self._stopping.is_set():
                return
            self.status.phase("running")
            await asyncio.gather(*(self._supervise(name) for name in self._apps))
        finally:
            self._winding.set()
            if running and not self._stopping.is_set():  # the app containers ended
                stopper.cancel()
                await self._stop_in_waves(self.spec["termination_grace_seconds"])
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            stopper.cancel()
            self.status.phase("exited", *self._outcome())

    async def _until_started(self, name: str) -> bool:
        """Wait until sidecar ``name`` runs and its startup probe (if any) passed, as
        the kubelet does before the next init container; False at a stop."""
        while not self._stopping.is_set():
            if self.status.container(name).get("started"):
                return True
            await self._sleep(0.05)
        return False

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

    async def _supervise(self, name: str) -> None:
        backoff = self.spec["backoff_initial_seconds"]
        policy = self.spec["restart_policy"]
        sidecar = name in self._sidecars
        winding = (self._winding,) if sidecar else ()
        changed = self._changed[name]
        container = self._entries[name]
        ended = False  # an instance ran and ended for a new entry
        reloaded = False  # it runs from an entry of a reload
        while not self._ending(name):
            if changed.is_set():
                changed.clear()
                await _discard(container, self._entries[name])
                self.status.replaced(name, self._entries[name], ended=ended)
                reloaded = True
                backoff = self.spec["backoff_initial_seconds"]
            container = self._entries[name]
            began = time.monotonic()
            code = await self._run_once(container)
            if self._ending(name):
                return
            ended = code is not None
            if changed.is_set():
                continue
            if code is None and reloaded:  # a new image it cannot run (yet): the daemon
                await self._sleep(math.inf, changed, *winding)  # pulls on, or an update comes
                continue
            if code is None:
                return
            if not sidecars.restarts(policy, sidecar=sidecar, exit_code=code):
                return
            if time.monotonic() - began > BACKOFF_RESET:
                backoff = self.spec["backoff_initial_seconds"]
            self.status.restarting(name, backoff)
            ended = False  # counted: a new entry during the back-off starts at once
            await self._sleep(backoff, changed, *winding)
            backoff = min(backoff * 2, self.spec["backoff_max_seconds"])

    async def _sleep(self, seconds: float, *also: asyncio.Event) -> None:
        """Sleep ``seconds``, or until the stop (or one of ``also``) comes."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, *also)]
        try:
            await asyncio.wait(
                waits,
                timeout=None if math.isinf(seconds) else seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for w in waits:
                w.cancel()

    async def _run_once(self, container: sandbox.ShimContainer) -> int | None:
        """One instance of ``container``: its exit code, or None when it cannot start."""
        name = container["name"]
        argv = container["argv"]
        if argv is None:
            self.status.waiting(
                name, container.get("reason", "ErrImagePull"), container.get("error")
            )
            return None
        instance = self.status.container(name)["restart_count"]
        log = sandbox.log_path(self.vm_dir, name, instance)
        log.parent.mkdir(parents=True, exist_ok=True)
        _prune(log.parent, instance)
        return await self._run_image(container, instance, log)

    async def _run_image(
        self, container: sandbox.ShimContainer, instance: int, log: Path
    ) -> int | None:
        """One instance run by runc from the container's bundle, in a cgroup under the
        microVM's (``container-<name>-<n>``: its CPU accounting folder, as above).

        ``runc run --detach`` makes the container and exits; the container's process,
        orphaned, becomes this shim's child (a subreaper, see ``shim``), which waits
        for it. Its output comes through the pipes runc handed on, so no runc process
        stays beside a running container."""
        name = container["name"]
        bundle = Path(container["bundle"])
        instance_id = f"{self.spec['id']}-{name}-{instance}"
        spec = sandbox.read_json(bundle / "config.json")
        parent = self.spec.get("cgroup_parent")
        if parent:
            spec.setdefault("linux", {})["cgroupsPath"] = f"{parent}/container-{name}-{instance}"
        private = self.vm_dir / "subpaths" / f"{name}-{instance}"
        problem, held = subpaths.apply(spec, container.get("sub_paths", []), private)
        if problem is not None:  # as the kubelet, which makes the mounts before the start
            self.status.waiting(name, "CreateContainerConfigError", problem)
            return None
        lifecycle = self.spec.get("lifecycle", {}).get(name, {})
        message_file = self.vm_dir / "termination" / f"{name}-{instance}"
        hooks.bind_message_file(
            spec, lifecycle.get("termination_message_path", "/dev/termination-log"), message_file
        )
        point = attach.Point(self.vm_dir, name, self.spec.get("attach", {}).get(name, {}))
        try:
            console, stdin = point.prepare(spec)
        except OSError as exc:  # no pipe or console socket to be had
            point.close()
            subpaths.release(held)
            self.status.terminated(name, 128, "StartError", f"cannot set up its stdio: {exc}")
            return 128
        sandbox.write_json(bundle / "config.json", spec)
        runc = ["runc", "--root", self.spec.get("runc_root", "/run/runc")]
        pid_file = bundle / "container.pid"
        pid_file.unlink(missing_ok=True)
        marks = self._oom_marks()
        # Our own pipes, not asyncio's: the container keeps them after runc has exited,
        # and asyncio's ``wait`` on 3.11 waits for its pipes to close too.
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *runc, "run", "--detach", *console, "--bundle", str(bundle),
                "--pid-file", str(pid_file), instance_id,
                stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            os.close(out_read)
            os.close(err_read)
            subpaths.release(held)
            point.close()
            self.status.terminated(name, 128, "StartError", f"cannot start runc: {exc}")
            return 128
        finally:
            os.close(out_write)
            os.close(err_write)
            if stdin is not None:
                os.close(stdin)  # the container holds it now
        self._live.add(name)
        returncode = None
        prober: probes.Prober | None = None
        with log.open("a", encoding="utf-8") as out:
            tees = (point.tee(streams.STDOUT), point.tee(streams.STDERR))
            pumps = [
                asyncio.create_task(
                    _pump(out_read, crilog.Writer(out, "stdout"), tees[0]), name=f"stdout-{name}"
                ),
                asyncio.create_task(
                    _pump(err_read, crilog.Writer(out, "stderr"), tees[1]), name=f"stderr-{name}"
                ),
            ]
            try:
                started = await proc.wait() == 0
                subpaths.release(held)  # runc has made its mounts (or failed to)
                if started:  # the container runs
                    pid = int(pid_file.read_text())
                    if not await point.open(out, pumps):  # its terminal, its socket
                        _signal(pid, signal.SIGKILL)
                    since = sandbox.iso()  # its start, reported once postStart passed
                    self._pids[name] = pid
                    self._hooks[name] = hook = hooks.Hooks(
                        name,
                        lifecycle,
                        pod_ip=self._pod_ip(),
                        exec_prefix=[*runc, "exec", instance_id],
                        scratch=bundle,
                        status=self.status,
                    )
                    prober = probes.Prober(
                        name,
                        self.spec.get("probes", {}).get(name, {}),
                        pod_ip=self._pod_ip(),
                        exec_prefix=[*runc, "exec", instance_id],
                        scratch=bundle,
                        status=self.status,
                        kill=lambda grace: self._kill_for_probe(name, pid, grace),
                    )
                    if await hook.post_start():
                        self.status.running(
                            name,
                            f"vkfargate://{instance_id}",
                            started=prober.started,
                            ready=prober.ready,
                            since=since,
                        )
                        prober.start()
                    elif not self._stopping.is_set():  # killed as the kubelet kills it
                        self._kill_for_probe(name, pid, None)
                    if self._ending(name):  # the stop came while runc was starting it
                        _signal(pid, signal.SIGKILL if self._killing else signal.SIGTERM)
                    elif self._changed.get(name, asyncio.Event()).is_set():
                        self._replace(name)  # so did a new entry
                    returncode = await _reaped(pid)
            finally:
                if prober is not None:
                    prober.stop()
                self._pids.pop(name, None)
                self._hooks.pop(name, None)
                self._live.discard(name)
            await asyncio.gather(*pumps)
        await _delete(runc, instance_id)
        point.end(exit_code(returncode if returncode is not None else 128))
        if returncode is None:  # runc could not start it: its reason ends the log
            self.status.terminated(name, 128, "StartError", start_error(log))
            return 128
        code = exit_code(returncode)
        policy = lifecycle.get("termination_message_policy", "File")
        text = hooks.message(message_file, policy, code, log)
        message_file.unlink(missing_ok=True)
        if code == 0:
            self.status.terminated(name, 0, "Completed", text)
        elif self._oom(code, marks):
            self.status.terminated(name, code, "OOMKilled", text)
        else:
            self.status.terminated(name, code, "Error", text)
        return code

    def _oom_marks(self) -> tuple[int, int]:
        """Counters an OOM kill of this microVM's containers raises: its groups' own
        ``oom_kill`` (v2 counts its children's too) or, on v1, where the kill counts in
        the killed task's group (the container's, which runc removes on exit), the
        host's ``oom_kill`` together with the microVM group's ``failcnt``."""
        kills = failures = 0
        v1 = False
        for group in self.spec["cgroups"]:
            kills += _counter(Path(group) / "memory.events", "oom_kill")
            if (Path(group) / "memory.failcnt").exists():
                v1 = True
                failures += _counter(Path(group) / "memory.failcnt", None)
        if v1:
            kills += _counter(Path("/proc/vmstat"), "oom_kill")
        return kills, (failures if v1 else -1)

    def _oom(self, code: int, before: tuple[int, int]) -> bool:
        """A SIGKILL while an OOM kill of this microVM's memory was recorded (on v1:
        some OOM kill on the host while this microVM's memory hit its limit)."""
        if code != 128 + signal.SIGKILL:
            return False
        kills, failures = self._oom_marks()
        return kills > before[0] and (failures == -1 or failures > before[1])

    async def _stop_when_asked(self) -> None:
        await self._stopping.wait()
        self.status.phase("stopping")
        stop = sandbox.read_json(self.vm_dir / "stop.json") or {}
        grace = float(stop.get("grace_seconds", self.spec["termination_grace_seconds"]))
        await self._stop_in_waves(grace)

    async def _stop_in_waves(self, grace: float) -> None:
        """Stop the app containers (and an init container that runs), then each
        sidecar, the last started first, each wave once the one before has ended: each
        container's preStop hook, then its SIGTERM (``_terminate``); SIGKILL what is
        left after ``grace`` (later by what the hooks took past it)."""
        deadline = time.monotonic() + grace
        first = [n for n in [*self._live, *self._apps] if n not in self._sidecars]
        for wave in sidecars.stop_waves(dict.fromkeys(first), self._sidecars):
            left = max(0.0, deadline - time.monotonic())
            ends = await asyncio.gather(
                *(
                    self._terminate(name, pid, left)
                    for name in wave
                    if (pid := self._pids.get(name)) is not None
                )
            )
            deadline = max([deadline, *ends])
            while any(map(self._not_ended, wave)) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        while self._live and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._killing = True  # and a container runc is still making gets KILL at once
        self._signal_all(signal.SIGKILL)

    def _not_ended(self, name: str) -> bool:
        """Whether ``name`` runs, is being made, or has not yet been recorded as ended
        (the kubelet's next wave waits until the container has stopped)."""
        return name in self._live or self.status.container(name)["state"] == "running"

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in list(self._pids.values()):
            _signal(pid, sig)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal a container's process: our child, not yet waited for, so ``pid`` is still
    that process (a PID is not reused before its parent has waited)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


async def _reaped(pid: int) -> int:
    """Wait for our child ``pid`` to end; its return code as ``Popen`` gives it."""
    fd = os.pidfd_open(pid)
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, ended.set)
    try:
        await ended.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    _, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222  (ended: it does not block)
    return os.waitstatus_to_exitcode(status)


async def _discard(old: sandbox.ShimContainer, new: sandbox.ShimContainer) -> None:
    """Remove the bundle of an entry replaced by ``new`` (its instance has ended)."""
    bundle = old.get("bundle")
    if bundle is not None and bundle != new.get("bundle"):
        rootfs.unmount_one(Path(bundle))
        await asyncio.to_thread(shutil.rmtree, bundle, True)


async def _delete(runc: list[str], instance_id: str) -> None:
    """Remove runc's record of an ended container and its cgroup."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *runc, "delete", "--force", instance_id,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    except (OSError, TimeoutError) as exc:
        print(f"runc delete {instance_id}: {exc}", file=sys.stderr, flush=True)
        return
    if proc.returncode != 0:
        print(f"runc delete {instance_id}: {err.decode(errors='replace')}", file=sys.stderr)


async def _pump(fd: int, writer: crilog.Writer, tee: Callable[[bytes], None] | None = None) -> None:
    """Copy a pipe's bytes, as CRI log lines (and to ``tee``: attached sessions), until
    every writer has closed it."""
    stream = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(fd, "rb", buffering=0)
    )
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(65536):
        writer.feed(decoder.decode(chunk))
        if tee is not None:
            tee(chunk)
    writer.feed(decoder.decode(b"", final=True))
    writer.close()


def _counter(path: Path, key: str | None) -> int:
    """The value of ``key`` in a flat-keyed file (``name value`` lines), or the file's
    only number when ``key`` is None; 0 when it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text()
        if key is None:
            return int(text.strip())
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def start_failed(log: Path) -> bool:
    """Whether runc could not start the process (its error is the log's last line)."""
    return "runc run failed" in _last_line(log) or "exec failed" in _last_line(log)


def start_error(log: Path) -> str:
    """runc's reason, e.g. ``exec: "nope": executable file not found in $PATH``."""
    line = _last_line(log)
    return line.split("exec failed: ", 1)[-1].split("runc run failed: ", 1)[-1]


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1].split(" ", 3)[-1]  # past the CRI timestamp, stream and tag
    return ""


def _prune(folder: Path, current: int) -> None:
    for old in folder.glob("*.log"):
        with contextlib.suppress(ValueError, OSError):
            if int(old.stem) <= current - KEPT_INSTANCES:
                old.unlink()
