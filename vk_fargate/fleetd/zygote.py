"""The shim template: ``python -m vk_fargate.fleetd.zygote``, one per fleet daemon.

A shim started as a fresh interpreter costs about 13 MiB of private memory, most of it
the interpreter and the modules it imports. This process imports them once, freezes
them out of the garbage collector's reach (``gc.freeze``, so a child's collections do
not write to the shared pages) and forks one shim per microVM. A child then costs only
the pages it writes: 4.8 MiB (``benchmarks/image_pull.py``).

Protocol, one line each way per shim: the daemon writes a microVM's folder; the
template answers ``ok <pid>`` or ``error <reason>``. Each shim runs in a session of
its own with ``<vm_dir>/shim.log`` as its output, exactly as a shim the daemon would
have started itself, so it outlives the template and the daemon and is adopted by PID
and start time after a restart. The template reaps nothing: SIGCHLD is ignored, so
the kernel reaps its children. It exits when the daemon closes its input.
Standard library only.
"""

from __future__ import annotations

import asyncio  # noqa: F401  imported for the children: the shims run asyncio
import ctypes
import gc
import os
import signal
import sys
import traceback
from pathlib import Path

from vk_fargate.fleetd import sandbox, shim
from vk_fargate.fleetd.runtimes import microvm, process  # noqa: F401  imported for the children

PR_SET_NAME = 15  # from <linux/prctl.h>
SHIM_NAME = b"vk-shim"  # what ps and /proc/<pid>/comm show for a forked shim


def _child(vm_dir: Path) -> int:
    """Become a shim for ``vm_dir``: a session of its own, its log as output."""
    os.setsid()
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(SHIM_NAME), 0, 0, 0)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(vm_dir / "shim.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    gc.enable()
    return shim.main_in(vm_dir)


def _spawn(vm_dir: Path) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        sandbox.record_shim(vm_dir, pid)
        return pid
    code = 1
    try:
        code = _child(vm_dir)
    except BaseException:  # a shim must never return into the template's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Answer the daemon's requests until it closes our input."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the shims
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the daemon, not us
    gc.collect()
    gc.freeze()
    gc.disable()
    for line in sys.stdin:
        folder = Path(line.rstrip("\n"))
        try:
            if not folder.is_absolute() or not (folder / "spec.json").is_file():
                raise OSError(f"no spec.json in {folder!s}")
            answer = f"ok {_spawn(folder)}"
        except OSError as exc:
            answer = f"error {exc}".replace("\n", " ")
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
