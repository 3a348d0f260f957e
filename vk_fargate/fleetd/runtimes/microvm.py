"""The ``microvm`` runtime: each microVM is a QEMU ``-M microvm`` guest, a child of the shim.

Isolation is a kernel of its own: the containers run inside the guest, started by its
``/init`` (see ``guest.py``), which also applies the restart policy and back-off, so a
restart costs no boot. The guest speaks on its serial console, which is QEMU's stdout
here; every protocol line starts with ``guest.MARK`` and names a container by index
(init containers first, then app containers) or ``-`` for the VM:

    - I            /init is running (the boot deadline is met)
    - A            init containers done, app containers start
    - F <i>        init container <i> failed for good
    - D            everything ended; the guest powers off
    - W <text>     a warning (e.g. the network could not be set up)
    <i> S          container <i> started (a new instance)
    <i> o|e <text> one line of its stdout|stderr
    <i> X <code> [oom]  it exited
    <i> R <ms>     it restarts after <ms> of back-off

Other console lines (kernel messages) go to ``<vm_dir>/console.log``. A stop writes
``VKSTOP <grace>`` to the console: the guest TERMs every container, waits the grace
period, KILLs what is left, reports and powers off; QEMU is killed if it has not ended
``STOP_MARGIN`` seconds after the grace. QEMU never outlives ``run()``.

The guest agent (``hack/guestagent``) serves exec and port sessions on a virtio-serial
port, ``guest.AGENT_PORT``, which QEMU backs with the Unix socket ``<vm_dir>/agent.sock``
(``AGENT_SOCKET``, relative to QEMU's working directory, the VM's directory, so that a
deep state directory cannot exceed a socket path's 108 bytes); ``agentmux.py`` is its
host side. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import shutil
import signal
import time
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path
from typing import IO

from vk_fargate.fleetd import crilog, guest, sandbox
from vk_fargate.fleetd.runtimes import process

BOOT_TIMEOUT = 60.0  # seconds from QEMU start to /init; TCG at 0.25 CPU boots in ~11 s
STOP_MARGIN = 10.0  # seconds past the grace for an emulated guest to report and power off
POWEROFF_WAIT = 5.0  # seconds QEMU may take to end after the guest says it is done
KILL_WAIT = 3.0  # seconds between SIGTERM and SIGKILL to QEMU
MAX_CONSOLE_LINE = 1024 * 1024  # a longer console line is cut (crilog splits it further)
TAP_PREFIX = "vkft"  # + 11 hex digits of the VM id's hash: 15 chars, the kernel's limit
TAIL_LINES = 5  # console/stderr lines quoted in a failure message
AGENT_SOCKET = "agent.sock"  # in the VM's directory: QEMU serves the guest agent's port


def accelerator() -> str:
    """``kvm`` when the CPU offers hardware virtualisation, else ``tcg`` (emulation).

    An openable ``/dev/kvm`` is not enough: nested paravirtual KVM without vmx/svm runs
    only patched kernels (see the project's microvm notes).
    """
    with contextlib.suppress(OSError):
        words = set(Path("/proc/cpuinfo").read_text().split())  # the flags are words
        if words & {"vmx", "svm"} and os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "kvm"
    return "tcg"


def tsc_khz() -> int | None:
    """The host's TSC rate for ``tsc_early_khz=``: emulated guests fail to calibrate it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":", 1)[1]) * 1000)
    return None


def tap_name(spec: sandbox.ShimSpec) -> str:
    net = spec["network"]
    if net is not None and net.get("tap"):
        return net["tap"]
    return default_tap(spec["id"])


def default_tap(vm_id: str) -> str:
    """The tap of microVM ``vm_id`` when its spec names none (the daemon's case)."""
    return TAP_PREFIX + hashlib.sha256(vm_id.encode()).hexdigest()[:11]


def qemu_argv(
    assets: guest.Assets, spec: sandbox.ShimSpec, initrd: Path, tap: str | None
) -> list[str]:
    """The command line of the VM's QEMU; the guest's console is its stdin/stdout."""
    accel = accelerator()
    append = "console=ttyS0 quiet pci=off panic=-1"
    if (khz := tsc_khz()) is not None:
        append += f" tsc_early_khz={khz}"
    argv = [guest.qemu_binary(), "-name", f"vkf-{spec['id']}"]
    argv += ["-M", "microvm,x-option-roms=off,isa-serial=on"]
    # TCG's translation cache defaults to 1 GiB of address space; 32 MiB holds a guest's code.
    argv += ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,tb-size=32"]
    argv += ["-smp", str(guest.vcpus(spec["vcpu_millis"])), "-m", str(spec["mem_mib"])]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio"]
    argv += ["-no-reboot"]  # the guest's reboot (panic=-1 after a crash) ends QEMU
    argv += ["-kernel", str(assets.vmlinux), "-initrd", str(initrd), "-append", append]
    argv += ["-device", "virtio-serial-device,id=vser0"]
    argv += ["-chardev", f"socket,id=agent,path={AGENT_SOCKET},server=on,wait=off"]
    argv += ["-device", f"virtserialport,bus=vser0.0,chardev=agent,name={guest.AGENT_PORT}"]
    if tap is not None and spec["network"] is not None:
        mac = sandbox.mac_address(spec["network"]["ip"])
        argv += ["-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no"]
        argv += ["-device", f"virtio-net-device,netdev=net0,mac={mac}"]
    setpriv = shutil.which("setpriv")  # QEMU dies with the shim, even a SIGKILLed one
    return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else argv


class MicroVMRuntime:
    """Runs one microVM's containers in a QEMU microvm guest."""

    def __init__(
        self,
        vm_dir: Path,
        spec: sandbox.ShimSpec,
        status: sandbox.Status,
        *,
        cache: Path | None = None,
        boot_timeout: float = BOOT_TIMEOUT,
    ) -> None:
        self.vm_dir = vm_dir
        self.spec = spec
        self.status = status
        self.cache = cache or guest.default_cache()
        self.boot_timeout = boot_timeout
        # Monotonic moments ("qemu_start", "init", "first_output") for benchmarks.
        self.timings: dict[str, float] = {}
        self.qemu_pid: int | None = None
        self._names = [c["name"] for c in [*spec["init_containers"], *spec["containers"]]]
        self._stopping = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._tap: str | None = None
        self._failure: tuple[str, str] | None = None
        self._done = False
        self._kill_at: float | None = None  # when to signal QEMU next
        self._termed = False
        self._logs: dict[int, tuple[IO[str], crilog.Writer, crilog.Writer]] = {}
        self._console: IO[str] | None = None
        self._tail: list[str] = []

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Boot the guest, follow its console until QEMU ends, then clean up."""
        try:
            await self._run()
        finally:
            await self._end_qemu()
            await self._delete_tap()
            self._finish_containers()
            for name in ("initrd.img", AGENT_SOCKET):
                with contextlib.suppress(OSError):
                    (self.vm_dir / name).unlink()
            self.status.phase("exited", *self._outcome())

    async def _run(self) -> None:
        for c in [*self.spec["init_containers"], *self.spec["containers"]]:
            if "bundle" not in c:
                self.status.waiting(c["name"], c.get("reason", "ErrImagePull"), c.get("error"))
                if c in self.spec["init_containers"]:
                    self._failure = ("InitError", f"init container {c['name']} failed")
                    return
        try:
            guest.qemu_binary()
            assets = await asyncio.to_thread(guest.ensure_assets, self.cache)
            initrd = self.vm_dir / "initrd.img"
            await asyncio.to_thread(guest.vm_initrd, assets, self.spec, initrd)
        except (guest.AssetError, OSError) as exc:
            self._failure = ("AssetError", str(exc))
            return
        if self._stopping.is_set():
            return
        if self.spec["network"] is not None and os.geteuid() == 0:
            try:
                await self._create_tap()
            except OSError as exc:
                self._failure = ("NetworkError", str(exc))
                return
        argv = qemu_argv(assets, self.spec, initrd, self._tap)
        with (
            (self.vm_dir / "console.log").open("a", encoding="utf-8") as console,
            (self.vm_dir / "qemu.stderr").open("wb") as stderr,
        ):
            self._console = console
            if self.spec["network"] is not None and self._tap is None:
                self._log_console("vk-fargate: not root, no tap: the guest has no network")
            self.timings["qemu_start"] = time.monotonic()
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=PIPE,
                stdout=PIPE,
                stderr=stderr,
                cwd=self.vm_dir,  # where AGENT_SOCKET is
                start_new_session=True,  # a Ctrl-C at the shim's terminal is a stop, not a kill
            )
            self.qemu_pid = self._proc.pid
            assert self._proc.stdout is not None
            reader = asyncio.create_task(self._read_console(self._proc.stdout), name="vm-console")
            await self._watch(reader)

    async def _watch(self, reader: asyncio.Task[None]) -> None:
        """Enforce the boot deadline, stops and power-off until the console closes."""
        boot_deadline = self.timings["qemu_start"] + self.boot_timeout
        stop_seen = False
        stop_wait = asyncio.create_task(self._stopping.wait(), name="microvm-stop-wait")
        try:
            while not reader.done():
                waits = {reader} if stop_wait.done() else {reader, stop_wait}
                await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                now = time.monotonic()
                if self._stopping.is_set() and not stop_seen:
                    stop_seen = True
                    self._begin_stop()
                booted = "init" in self.timings or reader.done()
                if not booted and not stop_seen and now > boot_deadline and not self._failure:
                    late = f"{self.boot_timeout:g}s{self._tail_text()}"
                    self._failure = ("BootTimeout", f"the guest did not reach init within {late}")
                    self._kill_at = now
                if self._kill_at is not None and now >= self._kill_at:
                    self._signal_qemu()
            await reader
        finally:
            stop_wait.cancel()
            reader.cancel()
        if "init" not in self.timings and self._failure is None and not self._stopping.is_set():
            self._failure = (
                "BootFailed",
                f"QEMU ended before the guest reached init{self._tail_text()}",
            )

    def _begin_stop(self) -> None:
        self.status.phase("stopping")
        proc = self._proc
        if "init" not in self.timings or proc is None or proc.stdin is None:
            self._kill_at = time.monotonic()
            return
        stop = sandbox.read_json(self.vm_dir / "stop.json") or {}
        grace = float(stop.get("grace_seconds", self.spec["termination_grace_seconds"]))
        with contextlib.suppress(OSError, RuntimeError):
            proc.stdin.write(f"\nVKSTOP {math.ceil(grace)}\n".encode())
        self._kill_at = time.monotonic() + grace + STOP_MARGIN

    async def _read_console(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._on_line(line)
            while len(pending) > MAX_CONSOLE_LINE:
                self._on_line(pending[:MAX_CONSOLE_LINE])
                pending = pending[MAX_CONSOLE_LINE:]
        if pending:
            self._on_line(pending)

    def _on_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        kernel, mark, line = text.partition(guest.MARK + " ")
        self._log_console(kernel)  # kernel messages, or their piece before a protocol line
        who, _, rest = line.partition(" ")
        kind, _, arg = rest.partition(" ")
        if not mark:
            return
        # Any protocol line proves /init runs, even when its "I" line was lost (a kernel
        # message printed into the middle of it on a loaded machine): a stop must then
        # go through the guest, with its grace period, not kill QEMU at once.
        self.timings.setdefault("init", time.monotonic())
        if who == "-":
            self._log_console(mark + line)
            self._on_vm_event(kind, arg)
        elif who.isdigit() and int(who) < len(self._names):
            self._on_container_event(int(who), kind, arg)

    def _on_vm_event(self, kind: str, arg: str) -> None:
        stopping = self._stopping.is_set()
        if kind == "I":
            self.timings["init"] = time.monotonic()
            if not stopping:
                self.status.phase("init")
        elif kind == "A" and not stopping:
            self.status.phase("running")
        elif kind == "F" and arg.isdigit() and int(arg) < len(self._names):
            self._failure = ("InitError", f"init container {self._names[int(arg)]} failed")
        elif kind == "D":
            self._done = True
            self._kill_at = min(self._kill_at or math.inf, time.monotonic() + POWEROFF_WAIT)

    def _on_container_event(self, index: int, kind: str, arg: str) -> None:
        name = self._names[index]
        if kind in ("o", "e"):
            self.timings.setdefault("first_output", time.monotonic())
            _, out, err = self._logs.get(index) or self._open_log(index)
            (out if kind == "o" else err).feed(arg + "\n")
        elif kind == "S":
            self._close_log(index)
            self._open_log(index)
            self.status.running(name, f"vkfargate://{secrets.token_hex(16)}")
        elif kind == "X":
            self._close_log(index)
            code_text, _, flag = arg.partition(" ")
            code = int(code_text) if code_text.isdigit() else 128
            log = sandbox.log_path(self.vm_dir, name, self.status.container(name)["restart_count"])
            if code != 0 and flag != "oom" and process.start_failed(log):
                self.status.terminated(name, 128, "StartError", process.start_error(log))
                return
            reason = "Completed" if code == 0 else "OOMKilled" if flag == "oom" else "Error"
            self.status.terminated(name, code, reason)
        elif kind == "R" and arg.isdigit():
            self.status.restarting(name, int(arg) / 1000)

    def _open_log(self, index: int) -> tuple[IO[str], crilog.Writer, crilog.Writer]:
        name = self._names[index]
        instance = self.status.container(name)["restart_count"]
        path = sandbox.log_path(self.vm_dir, name, instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("*.log"):
            with contextlib.suppress(ValueError, OSError):
                if int(old.stem) <= instance - process.KEPT_INSTANCES:
                    old.unlink()
        out = path.open("a", encoding="utf-8")  # closed by _close_log when the instance ends
        self._logs[index] = (out, crilog.Writer(out, "stdout"), crilog.Writer(out, "stderr"))
        return self._logs[index]

    def _close_log(self, index: int) -> None:
        if (entry := self._logs.pop(index, None)) is not None:
            entry[1].close()
            entry[2].close()
            entry[0].close()

    def _log_console(self, text: str) -> None:
        if not text.strip():
            return
        self._tail = [*self._tail[-(TAIL_LINES - 1) :], text]
        if self._console is not None and not self._console.closed:
            self._console.write(f"{crilog.timestamp()} {text}\n")
            self._console.flush()

    def _tail_text(self) -> str:
        lines = list(self._tail)
        with contextlib.suppress(OSError):
            lines += (self.vm_dir / "qemu.stderr").read_text(errors="replace").splitlines()
        lines = [line for line in lines if line.strip()][-TAIL_LINES:]
        return (": " + " | ".join(lines)) if lines else ""

    def _signal_qemu(self) -> None:
        """SIGTERM to QEMU (it exits at once), SIGKILL when that was KILL_WAIT ago."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL if self._termed else signal.SIGTERM)
        self._termed = True
        self._kill_at = time.monotonic() + KILL_WAIT

    async def _end_qemu(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal_qemu()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_WAIT)
            self._signal_qemu()
        await proc.wait()

    def _finish_containers(self) -> None:
        """Close logs; a container still running when QEMU ended was killed with it."""
        for index in list(self._logs):
            self._close_log(index)
        for item in [*self.status.doc["init_containers"], *self.status.doc["containers"]]:
            if item["state"] == "running":
                self.status.terminated(
                    item["name"], 128 + signal.SIGKILL, "Error", "the microVM ended"
                )

    def _outcome(self) -> tuple[str | None, str | None]:
        if self._failure is not None or self._stopping.is_set():
            return self._failure or ("Stopped", None)
        if self._proc is not None and not self._done:
            return "VMExited", f"QEMU exited ({self._proc.returncode}){self._tail_text()}"
        codes = [c.get("exit_code") for c in self.status.doc["containers"]]
        if codes and all(code == 0 for code in codes):
            return "Completed", None
        return "Error", None

    async def _create_tap(self) -> None:
        net = self.spec["network"]
        assert net is not None
        tap = tap_name(self.spec)
        with contextlib.suppress(OSError):
            await _ip("link", "del", "dev", tap)  # a leftover of a shim that was killed
        await _ip("tuntap", "add", "dev", tap, "mode", "tap")
        self._tap = tap
        await _ip("link", "set", "dev", tap, "master", net["bridge"])
        await _ip("link", "set", "dev", tap, "up")

    async def _delete_tap(self) -> None:
        if self._tap is not None:
            with contextlib.suppress(OSError):
                await _ip("link", "del", "dev", self._tap)
            self._tap = None


async def _ip(*args: str) -> None:
    """Run ``ip`` (iproute2); OSError naming the command when it fails."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ip", *args, stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE
        )
    except FileNotFoundError as exc:
        raise OSError(f"network setup: ip not found (Debian package iproute2): {exc}") from exc
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"network setup: ip {' '.join(args)}: {err.decode().strip()}")
