"""Starting, watching and stopping the control-plane processes.

Every process gets its own session (so a Ctrl-C in the terminal reaches the harness,
which then stops them in order) and its own log file. Processes of a harness that
belongs to this Python process also get ``PR_SET_PDEATHSIG``: if we die hard (SIGKILL,
a crashed test run), the kernel kills them, so no etcd or apiserver is ever orphaned.
``vk-fargate dev up`` starts them detached instead and ``dev down`` stops them by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from vk_fargate import errors, supervision
from vk_fargate.devcluster import components

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
KILL_WAIT = 10.0  # seconds a SIGKILLed process may take to close its files
PORTS_FROM = 20000  # servers' ports are picked from here to the ephemeral range
# How much of a failed component's log to quote in the error.
LOG_TAIL_LINES = 15


def _ephemeral_start() -> int:
    """The first port the kernel hands to outgoing connections."""
    try:
        return int(Path(EPHEMERAL_RANGE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago.

    They are picked below the kernel's ephemeral range: a port in it may be taken by
    any outgoing connection while its server restarts (a client retrying a connect to
    it can even connect to itself), and the server could not listen again. All sockets
    are held open together so the ports are distinct.
    """
    first = _ephemeral_start()
    pool = range(PORTS_FROM, first) if first - PORTS_FROM >= 4 * count else range(0)
    sockets: list[socket.socket] = []
    try:
        for port in random.sample(pool, k=len(pool)):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            if len(sockets) == count:
                break
        while len(sockets) < count:  # no room below the ephemeral range: any free port
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    command: components.Command, *, detach: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output appended to its log file."""
    command.log.parent.mkdir(parents=True, exist_ok=True)
    preexec: Callable[[], None] | None = None if detach else _die_with_parent
    with command.log.open("ab") as log:
        try:
            return subprocess.Popen(
                command.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                env=env,
            )
        except OSError as exc:
            raise errors.HarnessError(
                f"start {command.name}", f"cannot execute {command.argv[0]}: {exc}"
            ) from exc


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or '' when it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def wait_healthy(
    process: subprocess.Popen[bytes],
    command: components.Command,
    *,
    ssl_context: ssl.SSLContext | bool,
    timeout: float,
) -> None:
    """Poll ``command.health_url`` until it answers 200, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    poll = supervision.Backoff(0.05, 0.5, factor=1.5, jitter=0.0)
    last = "no answer yet"
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector) as http:
        while True:
            code = process.poll()
            if code is not None:
                raise errors.HarnessError(
                    f"start {command.name}",
                    f"exited with code {code} before becoming healthy:\n{log_tail(command.log)}",
                    log=command.log,
                )
            try:
                timeouts = aiohttp.ClientTimeout(total=2)
                async with http.get(command.health_url, timeout=timeouts) as response:
                    if response.status == 200:
                        return
                    last = f"{response.status}: {(await response.text())[-300:]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise errors.HarnessError(
                    f"start {command.name}",
                    f"{command.health_url} not healthy after {timeout:.0f}s ({last})",
                    log=command.log,
                )
            await poll.sleep()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def ended(pid: int) -> bool:
    """Whether ``pid`` has ended with all its threads: its files, listening sockets
    included, are closed. A killed multi-threaded process shows as a zombie while its
    other threads still exit and still hold them."""
    try:
        return not alive(pid) and len(list(Path(f"/proc/{pid}/task").iterdir())) <= 1
    except (FileNotFoundError, ProcessLookupError):
        return True


def program_of(pid: int) -> str | None:
    """argv[0] of a live process, to check a PID still is the program we started."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return None


def stop(pid: int, *, grace: float = 10.0, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it after ``grace`` seconds.

    ``pid`` leads its own session (``spawn`` made it so), so its group id equals it.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            break
        if child is None and ended(pid):
            break
        time.sleep(0.05)
    if child is None:
        kill(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    child.wait()


def kill(pid: int) -> None:
    """SIGKILL the process group of ``pid``, as a crash ends it, and wait (at most
    ``KILL_WAIT``) until its files, listening sockets included, are closed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
