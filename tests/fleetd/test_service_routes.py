"""Service routes: a container reaches ``cluster_ip:port`` (the ``kubernetes``
Service's address) and gets the endpoint on the host's loopback, through the relay on
its subnet's gateway; the route works again after fleetd is SIGKILLed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client

CLUSTER_IP = "10.0.0.1"


@contextlib.asynccontextmanager
async def greeter() -> AsyncIterator[int]:
    """A TCP server on the host's loopback that greets each caller; its port."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = (await reader.readline()).decode().strip()
        writer.write(f"hello {name} from the host\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _logs(fleet: client.FleetClient, vm_id: str) -> str:
    return b"".join([c async for c in fleet.logs(vm_id, "app")]).decode()


async def test_a_pod_reaches_the_service_address_through_the_gateway_relay(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    script = "while true; do echo pod | nc -w 2 10.0.0.1 443; sleep 1; done"
    async with greeter() as port:
        fleet_proc = await devfleet.start(tmp_path, registry=registry.host)
        try:
            async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
                vm_id = helpers.new_id()
                route = {"cluster_ip": CLUSTER_IP, "port": 443, "endpoint": f"127.0.0.1:{port}"}
                spec = helpers.spec(helpers.shell("app", script), service_routes=[route])
                await fleet.put_microvm(vm_id, spec)

                async def greeted(times: int) -> bool:
                    return (await _logs(fleet, vm_id)).count("hello pod from the host") >= times

                await waiting.until(lambda: greeted(1), timeout=90, what="the host's greeting")
                greetings = (await _logs(fleet, vm_id)).count("hello pod from the host")

            os.kill(fleet_proc.process.pid, signal.SIGKILL)
            fleet_proc.process.wait()
            fleet_proc = await devfleet.start(tmp_path, config=fleet_proc.config)
            async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
                await waiting.until(
                    lambda: greeted(greetings + 3), timeout=60, what="greetings after a restart"
                )
                await fleet.delete_microvm(vm_id, grace_seconds=0)
        finally:
            fleet_proc.stop()


@pytest.mark.parametrize("endpoint", ["localhost:6443", "127.0.0.1", "127.0.0.1:0"])
def test_an_endpoint_must_be_an_address_and_port(endpoint: str) -> None:
    route = {"cluster_ip": CLUSTER_IP, "port": 443, "endpoint": endpoint}
    with pytest.raises(ValueError, match=r"endpoint|does not appear to be an IPv4 or IPv6"):
        helpers.spec(helpers.shell("app", "true"), service_routes=[route])
