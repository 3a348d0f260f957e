"""Probes as the shim runs them beside real runc containers (busybox's httpd, sh), with
the fleet's ``container`` events the provider turns into Kubernetes events."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fleetd import helpers
from vk_fargate.fleet import client, models
from vk_fargate.fleetd import network

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

# A CGI health endpoint: 200 until /tmp/broken exists, then 500. The container's root
# is fresh for each instance, so a restarted one is healthy again until it breaks.
HEALTH_SERVER = r"""
mkdir -p /www/cgi-bin
cat > /www/cgi-bin/health <<'EOF'
#!/bin/sh
if [ -e /tmp/broken ]; then printf 'Status: 500 Internal Server Error\r\n\r\n'
else printf 'Content-Type: text/plain\r\n\r\nok'; fi
EOF
chmod +x /www/cgi-bin/health
httpd -p 8080 -h /www
"""


class Events:
    """The fleet's ``container`` events of one microVM, collected in the background."""

    def __init__(self, fleet: client.FleetClient, vm_id: str, since: int) -> None:
        self.found: list[models.ContainerEvent] = []
        self._fleet, self._vm_id, self._since = fleet, vm_id, since

    async def _follow(self) -> None:
        async for event in self._fleet.events(self._since):
            if event.microvm_id == self._vm_id and event.container_event is not None:
                self.found.append(event.container_event)

    def texts(self, reason: str) -> list[str]:
        return [e.message for e in self.found if e.reason == reason]


@contextlib.asynccontextmanager
async def collected(fleet: client.FleetClient, vm_id: str) -> AsyncIterator[Events]:
    cursor = (await fleet.list_microvms({})).cursor
    events = Events(fleet, vm_id, cursor)
    task = asyncio.create_task(events._follow(), name=f"events-{vm_id}")
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_liveness_http_probe_returning_500_restarts_the_container(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    script = HEALTH_SERVER + "sleep 1.5; touch /tmp/broken; sleep 1000"
    probe = {
        "http_get": {"port": 8080, "path": "/cgi-bin/health"},
        "initial_delay_seconds": 1,
        "period_seconds": 1,
        "failure_threshold": 2,
        "termination_grace_seconds": 1,  # sh as PID 1 ignores TERM: KILL after 1 s
    }
    spec = helpers.spec(helpers.shell("app", script, liveness_probe=probe))
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        vm = await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: helpers.container(v, "app").restart_count >= 1,
            what="a restart after the liveness probe failed",
        )
        app = helpers.container(vm, "app")
        assert app.last_termination is not None
        assert app.last_termination.exit_code == 137
        await helpers.until_vm(
            fleet_client, vm_id, lambda v: bool(events.texts("Killing")), what="events"
        )
    unhealthy = events.texts("Unhealthy")
    assert unhealthy[:2] == ["Liveness probe failed: HTTP probe failed with statuscode: 500"] * 2
    assert events.texts("Killing")[0] == "Container app failed liveness probe, will be restarted"
    assert [e.warning for e in events.found[:3]] == [True, True, False]
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_readiness_probe_toggles_ready(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    script = "mkdir -p /www; httpd -p 8080 -h /www; sleep 2; touch /www/ready; sleep 3; "
    script += "rm /www/ready; sleep 1000"
    probe = {"http_get": {"port": 8080, "path": "/ready"}, "period_seconds": 1}
    spec = helpers.spec(helpers.shell("app", script, readiness_probe=probe))
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        running = await helpers.until_vm(
            fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "running"
        )
        assert helpers.container(running, "app").ready is False
        assert helpers.container(running, "app").started is True
        await helpers.until_vm(
            fleet_client, vm_id, lambda v: helpers.container(v, "app").ready, what="ready"
        )
        # Failing 3 times (failure_threshold) takes it out again; it is not restarted.
        after = await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: not helpers.container(v, "app").ready,
            what="not ready again",
        )
    assert helpers.container(after, "app").state == "running"
    assert helpers.container(after, "app").restart_count == 0
    assert "Readiness probe failed: HTTP probe failed with statuscode: 404" in events.texts(
        "Unhealthy"
    )
    assert not events.texts("Killing")
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_startup_probe_gates_liveness_and_readiness(
    fleet_client: client.FleetClient,
) -> None:
    """Liveness would kill at its first failure, readiness would pass at once: neither
    runs before the startup probe passed."""
    vm_id = helpers.new_id()
    script = "sleep 3; touch /tmp/started; sleep 1000"
    started = {"exec": {"command": ["test", "-e", "/tmp/started"]}, "period_seconds": 1}
    spec = helpers.spec(
        helpers.shell(
            "app",
            script,
            startup_probe={**started, "failure_threshold": 30},
            liveness_probe={**started, "failure_threshold": 1},
            readiness_probe={"exec": {"command": ["true"]}, "period_seconds": 1},
        )
    )
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        running = await helpers.until_vm(
            fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "running"
        )
        app = helpers.container(running, "app")
        assert (app.started, app.ready) == (False, False)
        done = await helpers.until_vm(
            fleet_client, vm_id, lambda v: helpers.container(v, "app").ready, what="ready"
        )
    app = helpers.container(done, "app")
    assert app.started is True
    assert app.restart_count == 0
    failed = events.texts("Unhealthy")
    assert failed and set(failed) == {"Startup probe failed: "}
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_exec_liveness_probe_runs_inside_the_container(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    script = "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 1000"
    probe = {
        "exec": {"command": ["cat", "/tmp/healthy"]},
        "period_seconds": 1,
        "failure_threshold": 1,
        "termination_grace_seconds": 1,
    }
    spec = helpers.spec(helpers.shell("app", script, liveness_probe=probe))
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: helpers.container(v, "app").restart_count >= 1,
            what="a restart after the exec probe failed",
        )
        await helpers.until_vm(
            fleet_client, vm_id, lambda v: bool(events.texts("Killing")), what="events"
        )
    assert events.texts("Unhealthy")[0] == (
        "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory\n"
    )
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_tcp_readiness_probe(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    script = "sleep 2; mkdir -p /www; httpd -f -p 8080 -h /www"
    probe = {"tcp_socket": {"port": 8080}, "period_seconds": 1}
    spec = helpers.spec(helpers.shell("app", script, readiness_probe=probe))
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        vm = await helpers.until_vm(
            fleet_client, vm_id, lambda v: helpers.container(v, "app").ready, what="ready"
        )
    ip = vm.status.private_ip
    assert (
        f"Readiness probe failed: dial tcp {ip}:8080: connect: connection refused"
        in events.texts("Unhealthy")
    )
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_an_exec_probe_that_times_out_is_killed_inside_the_container(
    fleet_client: client.FleetClient,
) -> None:
    """Each run outlives its 1 s timeout: it fails with the kubelet's text, and is killed
    in the container (the container counts the probes' processes it sees)."""
    vm_id = helpers.new_id()
    script = "while :; do echo seen $(ps | grep -c '[s]leep 30'); sleep 0.5; done"
    probe = {"exec": {"command": ["sleep", "30"]}, "period_seconds": 2, "timeout_seconds": 1}
    spec = helpers.spec(helpers.shell("app", script, readiness_probe=probe))
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: len(events.texts("Unhealthy")) >= 3,
            timeout=60,
            what="three timed-out runs",
        )
    assert events.texts("Unhealthy")[0] == 'Readiness probe failed: command "sleep 30" timed out'
    logs = b"".join([c async for c in fleet_client.logs(vm_id, "app")]).decode()
    counts = [int(line.split()[1]) for line in logs.splitlines() if line.startswith("seen ")]
    assert 1 in counts, "the probe's process was never seen in the container"
    assert max(counts) == 1, counts
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


GRPC_SERVER = """
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("0.0.0.0:9000")
server.start()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.wait_for_termination()
"""


async def test_grpc_readiness_probe_reaches_a_server_in_the_pods_network(
    fleet_client: client.FleetClient,
) -> None:
    """grpcio's own health server, started in the microVM's network namespace once the
    container runs (busybox has no gRPC server): not ready, then ready."""
    vm_id = helpers.new_id()
    probe = {"grpc": {"port": 9000}, "period_seconds": 1}
    spec = helpers.spec(helpers.shell("app", "sleep 1000", readiness_probe=probe))
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        vm = await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: len(events.texts("Unhealthy")) >= 1,
            what="a failed grpc probe before the server runs",
        )
        assert helpers.container(vm, "app").ready is False
        # This fleet's prefix comes before the id in its namespace's name.
        (netns,) = [p.name for p in Path(network.NETNS_DIR).iterdir() if p.name.endswith(vm_id)]
        server = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, sys.executable, "-c", GRPC_SERVER
        )  # fmt: skip
        try:
            await helpers.until_vm(
                fleet_client, vm_id, lambda v: helpers.container(v, "app").ready, what="ready"
            )
        finally:
            server.kill()
            await server.wait()
    ip = vm.status.private_ip
    assert events.texts("Unhealthy")[0] == (
        f'Readiness probe failed: timeout: failed to connect service "{ip}:9000" within 1s: '
        "context deadline exceeded"
    )
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
