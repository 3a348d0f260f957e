"""The per-microVM shim: ``python -m vk_fargate.fleetd.shim <vm_dir>``.

Forked by the shim template (``zygote``) in a session of its own, or started as a
program of its own (the microVM tests do). It joins the microVM's cgroups and
network namespace (so every container inherits them), runs the runtime named in
``spec.json`` and exits when the microVM has stopped. SIGTERM asks for a stop; the
grace period comes from ``stop.json``. SIGHUP (``process`` runtime only) says
``spec.json`` changed: containers with a new image are replaced. Standard library only.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from pathlib import Path

from vk_fargate.fleetd import sandbox
from vk_fargate.fleetd.runtimes import process

CLONE_NEWNET = 0x40000000  # from <sched.h>
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


def join_cgroups(paths: list[str]) -> None:
    """Move this process into each cgroup (v1: one per controller; v2: one)."""
    for path in paths:
        Path(path, "cgroup.procs").write_text(str(os.getpid()))


def join_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def become_subreaper() -> None:
    """Orphans below us become our children: ``runc run --detach`` exits once the
    container runs, and the container's process is then ours to wait for."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


async def run(vm_dir: Path) -> int:
    spec: sandbox.ShimSpec = sandbox.read_json(vm_dir / "spec.json")
    status = sandbox.Status(vm_dir, spec)
    try:
        join_cgroups(spec["cgroups"])
        if spec["netns"]:
            join_netns(spec["netns"])
        if spec["runtime"] == "process":
            become_subreaper()
    except OSError as exc:
        status.phase("exited", "SandboxError", str(exc))
        return 1
    if spec["runtime"] == "microvm":
        from vk_fargate.fleetd.runtimes import microvm

        runtime: microvm.MicroVMRuntime | process.ProcessRuntime = microvm.MicroVMRuntime(
            vm_dir, spec, status
        )
    else:
        runtime = process.ProcessRuntime(vm_dir, spec, status)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop)
    if isinstance(runtime, process.ProcessRuntime):
        loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    await runtime.run()
    return 0


def main_in(vm_dir: Path) -> int:
    """Run the shim for ``vm_dir`` to its end; the exit code."""
    return asyncio.run(run(vm_dir))


def main() -> None:
    sys.exit(main_in(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
