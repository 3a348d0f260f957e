"""``GET /v1/microvms/{id}/stats`` against the real daemon (process runtime): readings
that move with the work done, per container where the host allows, and clear errors
for microVMs that have none."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import socket

import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.fleet import client, models

BUSY = "while :; do :; done"
IDLE = "sleep 600"


def _running(vm: models.MicroVM) -> bool:
    return vm.status.state == "running" and all(
        helpers.container(vm, c.name).state == "running" for c in vm.spec.containers
    )


async def _limits(fleet_client: client.FleetClient) -> str:
    return (await fleet_client.hosts())[0].limits


def _by_name(stats: models.MicroVMStats) -> dict[str, models.ContainerStats]:
    return {c.name: c for c in stats.containers}


async def test_busy_and_idle_microvms(fleet_client: client.FleetClient) -> None:
    limits = await _limits(fleet_client)
    if limits == "none":
        pytest.skip("this host enforces no cgroup limits, so there is nothing to read")
    busy_id, idle_id = helpers.new_id(), helpers.new_id()
    busy_spec = helpers.spec(helpers.shell("spin", BUSY), helpers.shell("nap", IDLE))
    idle_spec = helpers.spec(helpers.shell("nap", IDLE))
    await fleet_client.put_microvm(busy_id, busy_spec)
    await fleet_client.put_microvm(idle_id, idle_spec)
    try:
        busy_vm = await helpers.until_vm(fleet_client, busy_id, _running)
        await helpers.until_vm(fleet_client, idle_id, _running)

        busy_1 = await fleet_client.microvm_stats(busy_id)
        idle_1 = await fleet_client.microvm_stats(idle_id)
        await asyncio.sleep(1.5)
        busy_2 = await fleet_client.microvm_stats(busy_id)
        idle_2 = await fleet_client.microvm_stats(idle_id)

        for first, second, vm_id in ((busy_1, busy_2, busy_id), (idle_1, idle_2, idle_id)):
            assert second.microvm_id == first.microvm_id == vm_id
            assert second.timestamp > first.timestamp
            assert second.timestamp.utcoffset() == datetime.timedelta(0)
            assert second.started_at is not None and second.started_at <= second.timestamp
            assert second.memory.usage_bytes > 0
            assert 0 < second.memory.working_set_bytes <= second.memory.usage_bytes
            assert second.memory.rss_bytes is not None and second.memory.rss_bytes > 0
            assert second.cpu.usage_core_nanoseconds >= first.cpu.usage_core_nanoseconds

        busy_grew = busy_2.cpu.usage_core_nanoseconds - busy_1.cpu.usage_core_nanoseconds
        idle_grew = idle_2.cpu.usage_core_nanoseconds - idle_1.cpu.usage_core_nanoseconds
        assert busy_grew > 0
        assert idle_grew * 5 < busy_grew, (idle_grew, busy_grew)

        if limits != "cgroup-v1":
            assert busy_2.containers == []
            return
        # Per container: the spinning one did the work, the napping one next to it did not.
        spin_1, spin_2 = _by_name(busy_1)["spin"], _by_name(busy_2)["spin"]
        nap_1, nap_2 = _by_name(busy_1)["nap"], _by_name(busy_2)["nap"]
        assert set(_by_name(busy_2)) == {"spin", "nap"}
        assert set(_by_name(idle_2)) == {"nap"}
        spin_grew = spin_2.cpu.usage_core_nanoseconds - spin_1.cpu.usage_core_nanoseconds
        nap_grew = nap_2.cpu.usage_core_nanoseconds - nap_1.cpu.usage_core_nanoseconds
        assert spin_grew > 0
        assert nap_grew * 5 < spin_grew, (nap_grew, spin_grew)
        assert nap_2.cpu.usage_core_nanoseconds > 0  # starting a process costs some CPU
        assert spin_grew <= busy_grew  # a container is part of its microVM
        for item in (spin_2, nap_2):
            assert item.memory.working_set_bytes > 0
            assert item.memory.working_set_bytes <= item.memory.usage_bytes
            assert item.memory.rss_bytes is not None
            assert 0 < item.memory.rss_bytes <= item.memory.working_set_bytes
            assert item.started_at == helpers.container(busy_vm, item.name).started_at
    finally:
        await fleet_client.delete_microvm(busy_id, grace_seconds=0)
        await fleet_client.delete_microvm(idle_id, grace_seconds=0)


async def test_a_restarted_container_is_read_from_its_new_instance(
    fleet_client: client.FleetClient,
) -> None:
    if await _limits(fleet_client) != "cgroup-v1":
        pytest.skip("per-container readings need a cgroup v1 host")
    vm_id = helpers.new_id()
    # The first instance works a little and fails; the second one (after the back-off)
    # sleeps. Both run in the microVM's own folder, so the marker file survives.
    script = "if [ -f ran ]; then exec sleep 600; fi; touch ran; i=0; " + (
        "while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 1"
    )
    await fleet_client.put_microvm(vm_id, helpers.spec(helpers.shell("app", script)))
    accounting = pathlib.Path("/sys/fs/cgroup/cpuacct/vk-fargate", vm_id)
    try:
        vm = await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: _running(v) and helpers.container(v, "app").restart_count == 1,
        )
        app = _by_name(await fleet_client.microvm_stats(vm_id))["app"]
        assert app.started_at == helpers.container(vm, "app").started_at
        assert app.cpu.usage_core_nanoseconds > 0
        assert (accounting / "container-app-1").is_dir()
        assert not (accounting / "container-app-0").exists()  # removed when it ended
    finally:
        await fleet_client.delete_microvm(vm_id, grace_seconds=0)

    await waiting.until(
        lambda: helpers.forgotten(fleet_client, vm_id),
        timeout=30,
        what="the microVM to be forgotten",
    )
    assert not accounting.exists()  # the accounting groups went with the microVM


async def test_the_network_counters_are_the_microvm_s_traffic(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    await fleet_client.put_microvm(vm_id, helpers.spec(helpers.shell("nap", IDLE)))
    try:
        vm = await helpers.until_vm(fleet_client, vm_id, _running)
        before = (await fleet_client.microvm_stats(vm_id)).network
        if (await fleet_client.hosts())[0].networking == "nominal":
            assert before is None  # no link, nothing to count
            return
        assert before is not None and before.name == "eth0"
        assert vm.status.private_ip is not None
        assert helpers.route_via_bridge(vm.status.private_ip)
        # 40 datagrams of 1000 bytes to a port nobody listens on: received by the
        # microVM (rx), which may answer with ICMP port unreachable (tx).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(40):
                udp.sendto(b"x" * 1000, (vm.status.private_ip, 9))
        await asyncio.sleep(0.5)
        after = (await fleet_client.microvm_stats(vm_id)).network
        assert after is not None
        assert after.rx_bytes - before.rx_bytes >= 40 * 1000
        assert after.tx_bytes >= before.tx_bytes
        assert after.rx_errors == before.rx_errors == 0
    finally:
        await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_unknown_microvm_is_404(fleet_client: client.FleetClient) -> None:
    with pytest.raises(errors.NotFound):
        await fleet_client.microvm_stats(helpers.new_id())


async def test_a_stopped_microvm_has_no_stats(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("app", "exit 0"), restart_policy="Never")
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    with pytest.raises(errors.Conflict, match="stopped"):
        await fleet_client.microvm_stats(vm_id)
    await fleet_client.delete_microvm(vm_id)
