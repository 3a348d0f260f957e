"""What the provider shows about itself: the gauges of ``/metrics`` (leadership, pods by
phase, watch restarts, lease lag, live capacity and cost per namespace and profile, read
at scrape time) and the plain-HTTP server of ``/metrics``, ``/healthz`` and ``/readyz``.

Every replica watches the same cluster, so the cluster-wide gauges (pods, capacity, cost)
come from the leader only: ``sum()`` over all replicas' scrapes counts each pod once."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from vk_fargate import metrics, world
from vk_fargate.fargate import pricing
from vk_fargate.k8s import informers


def snapshot(
    state: world.World,
    *,
    region: str,
    watches: Mapping[str, informers.Informer],
    lease_lag: float,
    leading: bool,
) -> dict[str, Any]:
    """The gauges' values now (see ``metrics.StateCollector``)."""
    common = {
        "leading": leading,
        "watch_restarts": {name: watch.restarts for name, watch in watches.items()},
        "lease_lag": lease_lag,
    }
    if not leading:
        return {**common, "pods_by_phase": {}, "running": {}}
    by_phase: dict[str, int] = {}
    for pod in state.pods.values():
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        by_phase[phase] = by_phase.get(phase, 0) + 1
    running: dict[tuple[str, str], tuple[float, float, float]] = {}
    rates = pricing.rates_for(pricing.RATES, region if region in pricing.RATES else "us-east-1")
    for vm in state.vms.values():
        if vm.status.state in ("stopped", "failed"):
            continue
        key = (vm.spec.labels.get("namespace", ""), vm.spec.labels.get("profile", ""))
        cpus, gbs, usd = running.get(key, (0.0, 0.0, 0.0))
        vcpu = decimal.Decimal(vm.spec.vcpu_millis) / 1000
        memory = decimal.Decimal(vm.spec.mem_mib) / 1024
        hourly = pricing.fargate_hourly(vcpu, memory, vm.spec.ephemeral_gib, rates)
        running[key] = (cpus + float(vcpu), gbs + float(memory), usd + float(hourly))
    return {**common, "pods_by_phase": by_phase, "running": running}


async def serve(*, host: str, port: int, ready: Callable[[], bool]) -> web.AppRunner:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` (503 until ``ready()``)."""

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        synced = ready()
        return web.Response(text="ok" if synced else "syncing", status=200 if synced else 503)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
