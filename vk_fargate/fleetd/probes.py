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
500``), as the kubelet records one per failure. The handlers (exec, httpGet, tcpSocket) are
in ``probehandlers``, the grpc one in ``grpcprobe``.
Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import grpcprobe, probehandlers, sandbox

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
        return await probehandlers.exec_probe(
            exec_prefix, spec["exec"]["command"], timeout, pid_file
        )
    if spec.get("http_get"):
        action = spec["http_get"]
        host = action.get("host") or pod_ip
        return await probehandlers.http_probe(
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
        return await grpcprobe.probe(
            pod_ip, action["port"], service, timeout, probehandlers.USER_AGENT
        )
    if spec.get("tcp_socket"):
        action = spec["tcp_socket"]
        return await probehandlers.tcp_probe(action.get("host") or pod_ip, action["port"], timeout)
    return False, "probe has no handler this shim can run"
