"""A container's startup, liveness and readiness probes, run by the shim next to it
(in the microVM's network namespace) as the kubelet's prober runs them
(``pkg/kubelet/prober``: worker.go, prober.go).

One ``Prober`` per running container instance, made as runc has started it and
stopped as it ends (a new instance starts over: not started, not ready):

- the startup probe runs first; until it passes, the container is not ``started`` and
  the other two wait. Passed once, it is not run again for that instance;
- readiness starts false and follows its probe: ``ready`` changes only after
  ``success_threshold`` (``failure_threshold``) results in a row;
- a liveness (or startup) probe failing ``failure_threshold`` times in a row kills the
  container (``Killing``, with the probe's grace or the microVM's), then holds: the
  restart policy and its back-off decide what follows;
- a container without probes is started and ready as it runs.

Each probe waits ``initial_delay_seconds`` after the container started, then runs
every ``period_seconds``, each run limited to ``timeout_seconds``. Every failed run is
an ``Unhealthy`` event (``Liveness probe failed: HTTP probe failed with statuscode:
500``), as the kubelet records one per failure. Handlers: exec runs the command inside
the container with ``runc exec`` (exit 0 passes, else its output is the message);
httpGet sends a GET with the kubelet's User-Agent (2xx and 3xx pass; a redirect is
followed only to the same host, as the kubelet does; HTTPS is not verified, as the
kubelet's); tcpSocket connects; grpc calls ``grpc.health.v1.Health/Check``
(``grpcprobe``). The texts are Go's, as the kubelet prints them.
Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import grpcprobe, sandbox

USER_AGENT = "kube-probe/1.36"
MAX_OUTPUT = 10 * 1024  # the kubelet keeps this much of a probe's output
MAX_REDIRECTS = 10  # Go's http.Client
KINDS = ("startup", "liveness", "readiness")

Kill = Callable[[float | None], None]


class Prober:
    """The probes of one instance of container ``name``."""

    def __init__(
        self,
        name: str,
        probes: dict[str, dict[str, Any]],
        *,
        pod_ip: str,
        exec_prefix: list[str],
        scratch: Path,
        status: sandbox.Status,
        kill: Kill,
    ) -> None:
        self.name = name
        self.probes = probes
        self.pod_ip = pod_ip
        self.exec_prefix = exec_prefix  # runc exec <id>: the command follows
        self.scratch = scratch  # where an exec probe's PID file goes
        self.status = status
        self.kill = kill
        self.began = 0.0  # the event loop's time as it started (``start``)
        self.started = "startup" not in probes
        self.ready = self.started and "readiness" not in probes
        self._started = asyncio.Event()
        if self.started:
            self._started.set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Run the probes in the background, until ``stop``."""
        self.began = asyncio.get_running_loop().time()
        for kind in KINDS:
            if kind in self.probes:
                task = asyncio.get_running_loop().create_task(
                    self._worker(kind), name=f"probe-{kind}-{self.name}"
                )
                task.add_done_callback(_report)
                self._tasks.append(task)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _worker(self, kind: str) -> None:
        spec = self.probes[kind]
        if kind != "startup":
            await self._started.wait()
        loop = asyncio.get_running_loop()
        delay = spec["initial_delay_seconds"] - (loop.time() - self.began)
        if delay > 0:
            await asyncio.sleep(delay)
        last: bool | None = None
        run = 0
        while True:
            tick = loop.time()  # runs every period, however long each takes (a ticker)
            pid_file = self.scratch / f"probe-{kind}.pid"
            ok, message = await run_probe(spec, self.pod_ip, self.exec_prefix, pid_file)
            run = run + 1 if ok == last else 1
            last = ok
            if not ok:
                title = kind.capitalize()
                self.status.event(self.name, "Unhealthy", f"{title} probe failed: {message}")
            threshold = spec["success_threshold" if ok else "failure_threshold"]
            if run >= threshold and self._settle(kind, ok, spec):
                return
            period = spec["period_seconds"]
            await asyncio.sleep(period - (loop.time() - tick) % period)

    def _settle(self, kind: str, ok: bool, spec: dict[str, Any]) -> bool:
        """Act on a result that passed its threshold; True when the worker is done."""
        if kind == "readiness":
            if ok != self.ready:
                self.ready = ok
                self.status.probed(self.name, ready=ok)
            return False
        if kind == "startup" and ok:
            self.started = True
            self.ready = "readiness" not in self.probes
            self.status.probed(self.name, started=True, ready=self.ready)
            self._started.set()
            return True
        if ok:  # liveness passing
            return False
        self.status.event(
            self.name,
            "Killing",
            f"Container {self.name} failed {kind} probe, will be restarted",
            warning=False,
        )
        self.kill(spec.get("termination_grace_seconds"))
        return True  # held until the next instance, as the kubelet's worker


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"{task.get_name()} failed: {task.exception()!r}", flush=True)


async def run_probe(
    spec: dict[str, Any], pod_ip: str, exec_prefix: list[str], pid_file: Path
) -> tuple[bool, str]:
    """One run of a probe: (passed, the failure's text)."""
    timeout = float(spec["timeout_seconds"])
    if spec.get("exec"):
        return await exec_probe(exec_prefix, spec["exec"]["command"], timeout, pid_file)
    if spec.get("http_get"):
        action = spec["http_get"]
        host = action.get("host") or pod_ip
        return await http_probe(
            action.get("scheme", "HTTP").lower(),
            host,
            action["port"],
            action.get("path") or "/",
            [(h["name"], h.get("value", "")) for h in action.get("headers") or []],
            timeout,
        )
    if spec.get("grpc"):
        action = spec["grpc"]
        service = action.get("service") or ""
        return await grpcprobe.probe(pod_ip, action["port"], service, timeout, USER_AGENT)
    if spec.get("tcp_socket"):
        action = spec["tcp_socket"]
        return await tcp_probe(action.get("host") or pod_ip, action["port"], timeout)
    return False, "probe has no handler this shim can run"


def _go_error(exc: BaseException) -> str:
    """A connect error as Go words it: ``connect: connection refused``, ``i/o timeout``."""
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    if isinstance(exc, OSError) and exc.errno:  # asyncio's own strerror names the address
        text = os.strerror(exc.errno)
        return f"connect: {text[:1].lower()}{text[1:]}"
    return str(exc) or type(exc).__name__


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return False, f"dial tcp {_hostport(host, port)}: {_go_error(exc)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def http_probe(
    scheme: str,
    host: str,
    port: int,
    path: str,
    headers: list[tuple[str, str]],
    timeout: float,
) -> tuple[bool, str]:
    """A GET as the kubelet's HTTP prober sends it, redirects within the host followed."""
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{_hostport(host, port)}{path}"
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                code, location = await _get(url, headers)
        except TimeoutError:
            return False, (
                f'Get "{url}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )
        except OSError as exc:
            parsed = urllib.parse.urlsplit(url)
            where = _hostport(parsed.hostname or host, parsed.port or port)
            return False, f'Get "{url}": dial tcp {where}: {_go_error(exc)}'
        if 300 <= code < 400 and location:
            target = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(target).hostname != urllib.parse.urlsplit(url).hostname:
                return True, ""  # not followed: the redirect itself passes, as the kubelet's
            url = target
            continue
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"
    return False, f'Get "{url}": stopped after {MAX_REDIRECTS} redirects'


async def _get(url: str, headers: list[tuple[str, str]]) -> tuple[int, str | None]:
    """The status code and Location of a GET of ``url`` (HTTP/1.1; the body is not read,
    so a server slow to send or close it does not fail the probe)."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    context = None
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet's prober does not verify either
    port = parts.port or (443 if https else 80)
    host = parts.hostname or ""
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        names = {name.lower() for name, _ in headers}
        lines = [f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {parts.netloc}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept" not in names:
            lines.append("Accept: */*")
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status = (await reader.readline()).decode("latin-1").split()
        if len(status) < 2 or not status[1].isdigit():
            raise OSError(0, "malformed HTTP response")
        location = None
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "location":
                location = value.strip()
        return int(status[1]), location  # the body says nothing the verdict needs
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def exec_probe(
    prefix: list[str], command: list[str], timeout: float, pid_file: Path
) -> tuple[bool, str]:
    """Run ``command`` in the container (``prefix``: ``runc exec``, its options and the
    container's id). One that outlives ``timeout`` is killed inside the container (its
    PID from runc's ``--pid-file``), not only runc, so no probe piles up in there."""
    pid_file.unlink(missing_ok=True)
    *options, container = prefix
    proc = await asyncio.create_subprocess_exec(
        *options,
        "--pid-file",
        str(pid_file),
        container,
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        # runc has not reaped it yet (it waits for it), so the PID is still that process.
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False, f'command "{" ".join(command)}" timed out'
    text = out[:MAX_OUTPUT].decode(errors="replace")
    return proc.returncode == 0, text
