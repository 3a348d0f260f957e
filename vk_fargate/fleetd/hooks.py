"""A container's lifecycle hooks and termination message, as the kubelet runs and
reads them (``pkg/kubelet/lifecycle/handlers.go``, ``kuberuntime_container.go``).

- ``postStart`` runs right after the container started; the container is not reported
  running (nor probed) until it ends. A failed hook is a ``FailedPostStartHook``
  warning (``PostStartHook failed``: the kubelet keeps the hook's output out of the
  event, so no secret leaks) and the container is killed (``Killing``
  ``FailedPostStartHook``, as the kubelet's);
- ``preStop`` runs at every stop of the container before its SIGTERM, inside the
  grace period: what is left of it (at least ``MIN_GRACE`` seconds) is SIGTERM's.
  A failed one is a ``FailedPreStopHook`` warning (``PreStopHook failed``);
- handlers: ``exec`` in the container (``runc exec``, as exec probes: its output is
  not the container's log), ``httpGet`` (fails only when no answer comes: any status
  code passes, as the kubelet's) and ``sleep``;
- the termination message: a file the shim creates per container instance and binds
  at ``termination_message_path`` (as the kubelet does, so runc resolves the path
  inside the container's root and no link in the image leads out of it); after the
  container ended, at most ``MAX_MESSAGE`` bytes of it are the termination's message.
  ``FallbackToLogsOnError``: an empty file of a container that failed gives the tail
  of its log (``LOG_LINES`` lines, then at most ``LOG_BYTES`` bytes).
Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import crilog, probehandlers, sandbox

MIN_GRACE = 2.0  # kubelet's minimumGracePeriodInSeconds, after a preStop hook
MAX_MESSAGE = 4096  # kubelet's MaxContainerTerminationMessageLength
LOG_LINES = 80  # kubelet's MaxContainerTerminationMessageLogLines
LOG_BYTES = 2048  # kubelet's MaxContainerTerminationMessageLogLength
USER_AGENT = "kube-lifecycle/1.36"  # the kubelet's, for an httpGet hook
NO_TIMEOUT = 10.0**9  # a postStart hook runs as long as it takes, as the kubelet's


class Hooks:
    """The hooks of one running instance of container ``name``."""

    def __init__(
        self,
        name: str,
        lifecycle: dict[str, Any],
        *,
        pod_ip: str,
        exec_prefix: list[str],
        scratch: Path,
        status: sandbox.Status,
    ) -> None:
        self.name = name
        self.lifecycle = lifecycle
        self.pod_ip = pod_ip
        self.exec_prefix = exec_prefix  # runc exec <id>: the command follows
        self.scratch = scratch  # where an exec hook's PID file goes
        self.status = status

    async def post_start(self) -> bool:
        """Run the postStart hook, if any; False when it failed (the event recorded)."""
        handler = self.lifecycle.get("post_start")
        if not handler:
            return True
        error = await _guarded(
            run(handler, self.name, self.pod_ip, self.exec_prefix, self._pid_file(), None)
        )
        if error is None:
            return True
        print(f"container {self.name}: {error}", flush=True)  # the kubelet logs it too
        self.status.event(self.name, "FailedPostStartHook", "PostStartHook failed")
        # The kill that follows, worded as the kubelet's killContainer words it.
        self.status.event(self.name, "Killing", "FailedPostStartHook", warning=False)
        return False

    async def pre_stop(self, grace: float) -> float:
        """Run the preStop hook, if any, for at most ``grace`` seconds; the grace left
        for SIGTERM (``grace`` unchanged without a hook)."""
        handler = self.lifecycle.get("pre_stop")
        if not handler or grace <= 0:
            return grace
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(grace):
                error = await _guarded(
                    run(handler, self.name, self.pod_ip, self.exec_prefix, self._pid_file(), grace)
                )
        except TimeoutError:
            error = None  # the kubelet moves on to SIGTERM and records nothing
            print(f"container {self.name}: preStop hook did not end within {grace:g}s", flush=True)
        if error is not None:
            print(f"container {self.name}: {error}", flush=True)
            self.status.event(self.name, "FailedPreStopHook", "PreStopHook failed")
        # The kubelet counts the hook's whole seconds off the grace.
        return max(grace - int(loop.time() - began), MIN_GRACE)

    def _pid_file(self) -> Path:
        return self.scratch / "hook.pid"


async def _guarded(running: Coroutine[Any, Any, str | None]) -> str | None:
    """A hook that could not even be run (runc missing, no process left) is a failed
    hook, never an exception: the stop that waits for it must go on to SIGTERM."""
    try:
        return await running
    except (OSError, ValueError, KeyError) as exc:
        return f"Cannot run handler: {exc!r}"


async def run(
    handler: dict[str, Any],
    name: str,
    pod_ip: str,
    exec_prefix: list[str],
    pid_file: Path,
    timeout: float | None,
) -> str | None:
    """Run one hook handler; None when it passed, else the kubelet's message."""
    if handler.get("exec"):
        command = handler["exec"]["command"]
        ok, output = await probehandlers.exec_probe(
            exec_prefix, command, NO_TIMEOUT if timeout is None else timeout, pid_file
        )
        if ok:
            return None
        return (
            f"Exec lifecycle hook ({_go_list(command)}) for Container {name!r} failed - "
            f"error: command {' '.join(command)!r} exited non-zero, message: {output!r}"
        )
    if handler.get("http_get"):
        action = handler["http_get"]
        ok, message = await probehandlers.http_probe(
            action.get("scheme", "HTTP").lower(),
            action.get("host") or pod_ip,
            action["port"],
            action.get("path") or "/",
            _with_user_agent(
                [(h["name"], h.get("value", "")) for h in action.get("headers") or []]
            ),
            NO_TIMEOUT if timeout is None else timeout,
        )
        if ok or message.startswith("HTTP probe failed with statuscode"):
            return None  # an answer, whatever its code, passes a hook
        return (
            f"HTTP lifecycle hook ({action.get('path') or '/'}) for Container {name!r} "
            f"failed - error: {message}"
        )
    if handler.get("sleep"):
        await asyncio.sleep(handler["sleep"]["seconds"])
        return None
    return "Cannot run handler: unknown handler"


def _with_user_agent(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The kubelet's lifecycle User-Agent, unless the hook sets one."""
    if any(name.lower() == "user-agent" for name, _ in headers):
        return headers
    return [*headers, ("User-Agent", USER_AGENT)]


def _go_list(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"


def bind_message_file(config: dict[str, Any], destination: str, source: Path) -> None:
    """Bind an empty, world-writable ``source`` at ``destination`` in runc's ``config``
    (replacing the bind of an earlier instance), as the kubelet binds its file."""
    source.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    source.write_bytes(b"")
    source.chmod(0o666)  # whatever user the container runs as may write it
    folder = f"{source.parent}/"
    mounts = [m for m in config.get("mounts") or [] if not m.get("source", "").startswith(folder)]
    mounts.append(
        {
            "destination": destination,
            "type": "bind",
            "source": str(source),
            "options": ["rbind", "rw"],
        }
    )
    config["mounts"] = mounts


def message(source: Path, policy: str, exit_code: int, log: Path) -> str | None:
    """The termination message of an ended instance (None: it has none)."""
    text = ""
    with contextlib.suppress(OSError):
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            text = file.read(MAX_MESSAGE).decode(errors="replace")
    if not text and policy == "FallbackToLogsOnError" and exit_code != 0:
        text = log_tail(log)
    return text or None


def log_tail(log: Path) -> str:
    """The last ``LOG_LINES`` lines of a CRI log, at most their last ``LOG_BYTES``
    bytes, as the kubelet reads them for FallbackToLogsOnError."""
    lines: list[str] = []
    piece = ""
    with contextlib.suppress(OSError), log.open(encoding="utf-8", errors="replace") as file:
        for raw in file:
            record = crilog.parse(raw)
            if record is None:
                continue
            piece += record.render(with_timestamp=False)
            if record.full:
                lines.append(piece)
                piece = ""
                del lines[:-LOG_LINES]
    if piece:
        lines.append(piece)
    data = "".join(lines[-LOG_LINES:]).encode()
    return data[-LOG_BYTES:].decode(errors="replace")
