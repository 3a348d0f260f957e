"""ClusterIP Services inside pods' namespaces, through a real fleetd, runc, busybox and
nginx: a cluster's table put once reaches every microVM of the cluster (random
endpoints, one endpoint after a change, affinity, UDP, refusal of the rest of the
Service range, the gateway relay still first), and outlives a SIGKILL of fleetd."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.fleetd import helpers, test_service_routes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import client, models
from vk_fargate.fleetd import streams

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runc and namespaces need root")

CLUSTER = "svc-test"
LABELS = {fargate_nodes.CLUSTER_LABEL: CLUSTER}
NGINX = 'echo {name} > /usr/share/nginx/html/index.html && exec nginx -g "daemon off;"'
DNS_ANSWER = "192.0.2.123"  # what the UDP server answers to every A query (TEST-NET)
# A DNS server answering every A query with DNS_ANSWER, run in a pod's namespace.
DNS_SERVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    end = q.index(0, 12) + 5
    qtype = q[end - 4 : end - 2]
    answer = b""
    if qtype == b"\\x00\\x01":
        answer = b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04" + bytes(
            int(b) for b in "{DNS_ANSWER}".split(".")
        )
    count = b"\\x00\\x01" if answer else b"\\x00\\x00"
    s.sendto(q[:2] + b"\\x81\\x80\\x00\\x01" + count + b"\\x00\\x00\\x00\\x00"
             + q[12:end] + answer, peer)
"""


def free_service_cidr() -> ipaddress.IPv4Network:
    """A /24 of 10.96.0.0/16 that no route of this machine touches."""
    taken = []
    for route in json.loads(
        subprocess.run(["ip", "-j", "route", "show", "table", "all"],
                       capture_output=True, text=True, check=True).stdout
    ):  # fmt: skip
        with contextlib.suppress(ValueError):
            taken.append(ipaddress.ip_network(route.get("dst", ""), strict=False))
    candidates = [ipaddress.IPv4Network(f"10.96.{n}.0/24") for n in range(256)]
    random.shuffle(candidates)
    return next(c for c in candidates if not any(c.overlaps(t) for t in taken))


def unreachable_routes() -> str:
    return subprocess.run(
        ["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True, check=True
    ).stdout


def netns_of(vm_id: str) -> str:
    """The name of ``vm_id``'s network namespace (``vkf-<fleet prefix>-<id>``)."""
    (found,) = [p.name for p in Path("/run/netns").glob(f"vkf-*-{vm_id}")]
    return found


async def sh(api: client.FleetClient, vm_id: str, script: str) -> str:
    """What ``sh -c script`` prints (stdout and stderr) in the microVM's container."""
    out = b""
    async with (
        asyncio.timeout(120),
        api.exec(vm_id, "app", ["sh", "-c", script], stdin=False, tty=False) as ws,
    ):
        async for message in ws:
            assert message.type == aiohttp.WSMsgType.BINARY, message
            channel, payload = streams.unframe(message.data)
            if channel in (streams.STDOUT, streams.STDERR):
                out += payload
    return out.decode()


def wgets(ip: str, times: int, port: int = 80) -> str:
    """A script fetching ``http://ip:port/`` ``times`` times, one line each (Debian's
    busybox wget crashes with ``-T``, so ``timeout`` bounds it)."""
    return (
        f"for i in $(seq {times}); do "
        f"timeout 5 wget -q -O- http://{ip}:{port}/ 2>&1 || echo FAILED; done"
    )


@dataclasses.dataclass
class Stack:
    fleet: devfleet.Fleet
    api: client.FleetClient
    cidr: ipaddress.IPv4Network
    backends: dict[str, str]  # page -> pod IP
    client_id: str
    udp_id: str
    outsider_id: str  # a microVM of another cluster
    udp_ip: str
    relay_port: int

    def ip(self, host: int) -> str:
        return str(self.cidr[host])

    def table(self, web: list[str], **extra: object) -> models.ServiceTable:
        """The cluster's table: ``web`` (IPs) behind .50:80, the UDP server behind
        .53:53, an endpointless .51:80, and the kubernetes Service at .1:443 (whose
        relay must win: its endpoint here refuses)."""
        some_pod = next(iter(self.backends.values()))
        ports = [
            {"name": "default/web:http", "cluster_ip": self.ip(50), "port": 80,
             "endpoints": [f"{ip}:80" for ip in web], **extra},
            {"name": "kube-system/kube-dns:dns", "cluster_ip": self.ip(53), "port": 53,
             "protocol": "UDP", "endpoints": [f"{self.udp_ip}:53"]},
            {"name": "default/empty:http", "cluster_ip": self.ip(51), "port": 80},
            {"name": "default/kubernetes:https", "cluster_ip": self.ip(1), "port": 443,
             "endpoints": [f"{some_pod}:443"]},
        ]  # fmt: skip
        return models.ServiceTable.model_validate(
            {"service_cidrs": [str(self.cidr)], "ports": ports}
        )


async def _running(api: client.FleetClient, vm_id: str) -> models.MicroVM:
    return await helpers.until_vm(
        api,
        vm_id,
        lambda v: v.status.state == "running" and helpers.container(v, "app").state == "running",
        timeout=120,
        what=f"microVM {vm_id} running",
    )


def client_spec(cidr: ipaddress.IPv4Network, relay_port: int, script: str) -> models.MicroVMSpec:
    route = {"cluster_ip": str(cidr[1]), "port": 443, "endpoint": f"127.0.0.1:{relay_port}"}
    return helpers.spec(helpers.shell("app", script), labels=LABELS, service_routes=[route])


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, registry: devregistry.Registry
) -> AsyncIterator[Stack]:
    """A fleetd with two nginx microVMs (pages ``backend-a``, ``backend-b``), a busybox
    client (a service route to a greeter on the host's loopback) and a busybox pod for
    a UDP server, all of one cluster."""
    cidr = free_service_cidr()
    async with test_service_routes.greeter() as greeter_port:
        fleet = await devfleet.start(tmp_path_factory.mktemp("services"), registry=registry.host)
        api = client.FleetClient(fleet.url, fleet.token)
        try:
            pages = {"backend-a": helpers.new_id(), "backend-b": helpers.new_id()}
            client_id, udp_id, outsider_id = helpers.new_id(), helpers.new_id(), helpers.new_id()
            other = {fargate_nodes.CLUSTER_LABEL: "other-cluster"}
            specs = {
                **{
                    vm_id: helpers.spec(
                        helpers.shell("app", NGINX.format(name=page), image="nginx"),
                        labels=LABELS,
                    )
                    for page, vm_id in pages.items()
                },
                client_id: client_spec(cidr, greeter_port, "exec sleep 100000"),
                udp_id: helpers.spec(helpers.shell("app", "exec sleep 100000"), labels=LABELS),
                outsider_id: helpers.spec(helpers.shell("app", "exec sleep 100000"), labels=other),
            }
            await asyncio.gather(*(api.put_microvm(i, s) for i, s in specs.items()))
            vms = {i: await _running(api, i) for i in specs}
            stack = Stack(
                fleet=fleet,
                api=api,
                cidr=cidr,
                backends={p: vms[i].status.private_ip or "" for p, i in pages.items()},
                client_id=client_id,
                udp_id=udp_id,
                udp_ip=vms[udp_id].status.private_ip or "",
                outsider_id=outsider_id,
                relay_port=greeter_port,
            )
            yield stack
            fleet, api = stack.fleet, stack.api  # a test may have restarted fleetd
        finally:
            await api.close()
            fleet.stop()


async def test_a_cluster_ip_reaches_every_endpoint_and_the_relay_still_wins(stack: Stack) -> None:
    assert (await stack.api.put_services(CLUSTER, models.ServiceTable())) == models.ServiceTable()
    table = stack.table(list(stack.backends.values()))
    assert await stack.api.put_services(CLUSTER, table) == table
    assert await _get(stack, CLUSTER) == table
    answers = (await sh(stack.api, stack.client_id, wgets(stack.ip(50), 30))).split()
    assert set(answers) == {"backend-a", "backend-b"}, answers
    greeting = await sh(stack.api, stack.client_id, f"echo pod | nc -w 3 {stack.ip(1)} 443")
    assert greeting.strip() == "hello pod from the host", greeting


async def test_a_new_table_is_in_force_when_the_put_is_answered(stack: Stack) -> None:
    await stack.api.put_services(CLUSTER, stack.table(list(stack.backends.values())))
    await stack.api.put_services(CLUSTER, stack.table([stack.backends["backend-b"]]))
    answered = time.monotonic()
    answers = (await sh(stack.api, stack.client_id, wgets(stack.ip(50), 20))).split()
    took = time.monotonic() - answered
    assert answers == ["backend-b"] * 20, answers
    assert took < 20, took
    print(f"20 requests through the changed Service, all to backend-b, in {took:.2f} s")


async def test_unassigned_addresses_and_ports_without_endpoints_are_refused_at_once(
    stack: Stack,
) -> None:
    await stack.api.put_services(CLUSTER, stack.table(list(stack.backends.values())))
    for host in (99, 51):  # nothing there; a Service without endpoints
        said = await sh(
            stack.api, stack.client_id, f"timeout 10 wget -q -O- http://{stack.ip(host)}/"
        )
        assert "refused" in said.lower(), said
    probe = (
        "import socket, sys, time\n"
        "t = time.monotonic()\n"
        "s = socket.socket(); s.settimeout(10)\n"
        "try: s.connect((sys.argv[1], 80)); print('connected')\n"
        "except OSError as e: print(e.errno, round(time.monotonic() - t, 4))\n"
    )
    for host in (99, 51, 200):
        done = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns_of(stack.client_id), sys.executable, "-c", probe,
            stack.ip(host), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(done.communicate(), 30)
        errno, seconds = out.decode().split()
        print(f"connect to {stack.ip(host)}:80 from the client: errno {errno} in {seconds} s")
        assert int(errno) == 111, out  # refused inside the pod, not by the host (113)
        assert float(seconds) < 0.5


async def test_a_udp_service_reaches_a_server_in_another_pod(stack: Stack) -> None:
    await stack.api.put_services(CLUSTER, stack.table(list(stack.backends.values())))
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns_of(stack.udp_id), sys.executable, "-c", DNS_SERVER,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert await asyncio.wait_for(server.stdout.readline(), 30) == b"ready\n"
        said = await sh(stack.api, stack.client_id, f"nslookup -type=a web.test {stack.ip(53)}")
        assert DNS_ANSWER in said, said
    finally:
        server.kill()
        await server.wait()


async def test_affinity_keeps_a_pod_on_one_endpoint(stack: Stack) -> None:
    await stack.api.put_services(
        CLUSTER, stack.table(list(stack.backends.values()), affinity_seconds=60)
    )
    answers = (await sh(stack.api, stack.client_id, wgets(stack.ip(50), 10))).split()
    assert len(answers) == 10 and len(set(answers)) == 1, answers
    assert answers[0] in stack.backends


async def test_bad_tables_are_refused_and_ranges_are_routed_nowhere(stack: Stack) -> None:
    table = stack.table(list(stack.backends.values()))
    await stack.api.put_services(CLUSTER, table)
    assert f"unreachable {stack.cidr}" in unreachable_routes()
    route = await _run("ip", "route", "get", stack.ip(50))  # as the host would send it
    assert "unreachable" in route or "No route to host" in route, route
    assert await _get(stack, "another-cluster") == models.ServiceTable()
    outside = {"service_cidrs": [str(stack.cidr)],
               "ports": [{"name": "a/b:c", "cluster_ip": "10.255.255.1", "port": 80}]}  # fmt: skip
    for body, status in [
        (outside, 422),
        ({"service_cidrs": ["8.8.8.0/24"]}, 422),
        ({"service_cidrs": [str(stack.cidr)], "extra": 1}, 422),
        ({"ports": [{"name": "a/b:c", "cluster_ip": stack.ip(5), "port": 0}]}, 422),
        ({"service_cidrs": ["127.0.0.0/8"]}, 409),  # the host's loopback
        ({"service_cidrs": [_subnet(stack)]}, 409),  # the fleet's own subnet
    ]:
        async with aiohttp.ClientSession() as session:
            put = await session.put(
                f"{stack.fleet.url}/v1/clusters/{CLUSTER}/services",
                json=body,
                headers={"Authorization": f"Bearer {stack.fleet.token}"},
            )
            assert put.status == status, (body, await put.text())
    assert await _get(stack, CLUSTER) == table  # nothing refused was kept


async def test_another_clusters_microvms_get_none_of_the_rules(stack: Stack) -> None:
    await stack.api.put_services(CLUSTER, stack.table(list(stack.backends.values())))
    ours = await _run("ip", "netns", "exec", netns_of(stack.client_id), "iptables-save")
    theirs = await _run("ip", "netns", "exec", netns_of(stack.outsider_id), "iptables-save")
    assert "KUBE-SVC-" in ours and str(stack.cidr) in ours, ours
    assert "KUBE-SVC-" not in theirs and str(stack.cidr) not in theirs, theirs


async def _run(*command: str) -> str:
    """What ``command`` prints, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


async def test_a_big_clusters_table_of_several_mib_is_taken(stack: Stack) -> None:
    ports = [
        {"name": f"ns/svc-{i}:p", "cluster_ip": stack.ip(2 + i % 250), "port": 1 + i,
         "endpoints": ["192.0.2.10:8080", "192.0.2.11:8080"]}
        for i in range(12000)
    ]  # fmt: skip
    big = models.ServiceTable.model_validate({"service_cidrs": [str(stack.cidr)], "ports": ports})
    assert len(big.model_dump_json()) > 1.5 * 2**20  # past aiohttp's default 1 MiB
    assert await stack.api.put_services("big-cluster", big) == big  # no microVM of it
    assert await _get(stack, "big-cluster") == big
    await stack.api.put_services("big-cluster", models.ServiceTable())


async def test_the_table_outlives_a_sigkill_of_fleetd_and_reaches_new_microvms(
    stack: Stack,
) -> None:
    table = stack.table(list(stack.backends.values()))
    await stack.api.put_services(CLUSTER, table)
    os.kill(stack.fleet.process.pid, signal.SIGKILL)
    stack.fleet.process.wait()
    stack.fleet = await devfleet.start(stack.fleet.config.parent, config=stack.fleet.config)
    await stack.api.close()
    stack.api = client.FleetClient(stack.fleet.url, stack.fleet.token)
    assert await _get(stack, CLUSTER) == table
    assert f"unreachable {stack.cidr}" in unreachable_routes()
    answers = (await sh(stack.api, stack.client_id, wgets(stack.ip(50), 30))).split()
    assert set(answers) == {"backend-a", "backend-b"}, answers
    # A microVM made now: its very first request, as its container starts, is served.
    newcomer = helpers.new_id()
    first = f"{wgets(stack.ip(50), 1)}; echo pod | nc -w 3 {stack.ip(1)} 443; exec sleep 100000"
    await stack.api.put_microvm(newcomer, client_spec(stack.cidr, stack.relay_port, first))
    await _running(stack.api, newcomer)

    async def logged() -> str:
        return b"".join([c async for c in stack.api.logs(newcomer, "app")]).decode()

    async def both() -> str | None:
        text = await logged()
        return text if "hello pod from the host" in text else None

    text = await asyncio.wait_for(_poll(both), 60)
    assert text.split()[0] in stack.backends, text
    # A graceful stop (``--stop-on-exit``) takes the host's routes back.
    stack.fleet.stop()
    assert f"unreachable {stack.cidr}" not in unreachable_routes()


async def _poll(probe: Callable[[], Awaitable[str | None]]) -> str:
    while not (found := await probe()):
        await asyncio.sleep(0.2)
    return found


async def _get(stack: Stack, cluster: str) -> models.ServiceTable:
    async with aiohttp.ClientSession() as session:
        got = await session.get(
            f"{stack.fleet.url}/v1/clusters/{cluster}/services",
            headers={"Authorization": f"Bearer {stack.fleet.token}"},
        )
        assert got.status == 200, await got.text()
        return models.ServiceTable.model_validate(await got.json())


def _subnet(stack: Stack) -> str:
    return str(yaml.safe_load(stack.fleet.config.read_text())["subnets"][0]["cidr"])
