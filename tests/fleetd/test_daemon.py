"""Daemon-level behaviour on fleets of their own: capacity, restarts, drains, events."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests import pushing, waiting
from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client, models
from vk_fargate.fleetd import supervisor

SMALL_HOSTS = [
    {"id": "small-a", "zone": "eu-central-1a", "vcpus": 1, "mem_mib": 4096},
    {"id": "small-b", "zone": "eu-central-1b", "vcpus": 1, "mem_mib": 4096},
]


@pytest.fixture
async def small_fleet(
    tmp_path: Path, registry: devregistry.Registry
) -> AsyncIterator[devfleet.Fleet]:
    running = await devfleet.start(tmp_path, hosts=SMALL_HOSTS, registry=registry.host)
    try:
        yield running
    finally:
        running.stop()


async def test_capacity_refusal_is_503_with_retry_after(small_fleet: devfleet.Fleet) -> None:
    async with client.FleetClient(small_fleet.url, small_fleet.token) as fleet:
        spec = helpers.spec(helpers.shell("app", "sleep 300"))
        placed = [await fleet.put_microvm(helpers.new_id(), spec) for _ in range(8)]
        assert {vm.status.host for vm in placed} == {"small-a", "small-b"}
        with pytest.raises(errors.InsufficientCapacity) as caught:
            await fleet.put_microvm(helpers.new_id(), spec)
        assert caught.value.retry_after >= 1
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{small_fleet.url}/v1/microvms/one-more",
                json=spec.model_dump(mode="json"),
                headers={"Authorization": f"Bearer {small_fleet.token}"},
            ) as response,
        ):
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["code"] == "InsufficientCapacity"
        hosts = {h.id: h for h in await fleet.hosts()}
        assert hosts["small-a"].allocated.vcpu_millis == 1000
        # Deleting one frees room for one more.
        await fleet.delete_microvm(placed[0].id, grace_seconds=0)
        await waiting.until(lambda: _can_place(fleet, spec), what="room after a delete")


async def _can_place(fleet: client.FleetClient, spec: models.MicroVMSpec) -> bool:
    try:
        await fleet.put_microvm(helpers.new_id(), spec)
    except errors.InsufficientCapacity:
        return False
    return True


async def test_spread_group_puts_replicas_in_both_zones(small_fleet: devfleet.Fleet) -> None:
    async with client.FleetClient(small_fleet.url, small_fleet.token) as fleet:
        spec = helpers.spec(helpers.shell("app", "sleep 300"), spread_group="web")
        zones = [(await fleet.put_microvm(helpers.new_id(), spec)).status.zone for _ in range(4)]
        assert sorted(zones) == ["eu-central-1a", "eu-central-1a", "eu-central-1b", "eu-central-1b"]


async def test_events_resume_after_a_dropped_connection(small_fleet: devfleet.Fleet) -> None:
    async with client.FleetClient(small_fleet.url, small_fleet.token) as fleet:
        cursor = (await fleet.list_microvms()).cursor
        first = helpers.new_id()
        await fleet.put_microvm(first, helpers.spec(helpers.shell("app", "sleep 300")))
        seen: list[models.Event] = []
        async for event in fleet.events(cursor):
            seen.append(event)
            if event.microvm_id == first:
                break
        stream_broke_at = seen[-1].cursor
        # While nobody listens, more happens.
        second = helpers.new_id()
        await fleet.put_microvm(second, helpers.spec(helpers.shell("app", "sleep 300")))
        await fleet.delete_microvm(first, grace_seconds=0)
        resumed: list[models.Event] = []
        async for event in fleet.events(stream_broke_at):
            resumed.append(event)
            if event.type == "deleted" and event.microvm_id == first:
                break
        cursors = [e.cursor for e in resumed]
        assert cursors == sorted(cursors) and cursors[0] == stream_broke_at + 1
        assert second in {e.microvm_id for e in resumed}


async def test_restart_readopts_survivors_and_reports_the_lost(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    fleet_proc = await devfleet.start(tmp_path, registry=registry.host)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            survivor, lost = helpers.new_id(), helpers.new_id()
            for vm_id in (survivor, lost):
                await fleet.put_microvm(
                    vm_id, helpers.spec(helpers.shell("app", "echo hi; sleep 300"))
                )
                await helpers.until_vm(
                    fleet, vm_id, lambda v: helpers.container(v, "app").state == "running"
                )
            before = await fleet.get_microvm(survivor)
        # fleetd dies hard; then one microVM's shim dies while nobody watches.
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()
        state = tmp_path / "state" / "microvms"
        lost_shim = supervisor.read_status(state / lost)
        assert lost_shim is not None
        os.killpg(lost_shim["shim_pid"], signal.SIGKILL)
        await asyncio.sleep(0.2)

        fleet_proc = await devfleet.start(tmp_path, config=fleet_proc.config)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            after = await fleet.get_microvm(survivor)
            assert after.status.state == "running"
            assert after.status.private_ip == before.status.private_ip
            assert (
                helpers.container(after, "app").container_id
                == helpers.container(before, "app").container_id
            )
            gone = await fleet.get_microvm(lost)
            assert gone.status.state == "failed"
            assert gone.status.reason == "HostLost"
            # The survivor is still managed: delete works through the adopted shim.
            await fleet.delete_microvm(survivor, grace_seconds=0)
            await waiting.until(lambda: _absent(fleet, survivor), what="the survivor deleted")
    finally:
        fleet_proc.stop()


async def test_a_microvm_accepted_before_a_crash_is_provisioned_after_it(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """A PUT answered 201 is a promise: a microVM still provisioning when fleetd dies
    (here: waiting for an image that does not exist yet) is provisioned by the restarted
    fleetd, not reported lost."""
    image = f"myorg/late-{helpers.new_id()}:1"
    vm_id = helpers.new_id()
    fleet_proc = await devfleet.start(tmp_path, registry=registry.host)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            app = {"name": "app", "image": image, "command": ["sleep", "300"]}
            await fleet.put_microvm(vm_id, helpers.spec(app))
            waiting_for_image = await helpers.until_vm(
                fleet,
                vm_id,
                lambda v: (
                    helpers.container(v, "app").reason in ("ErrImagePull", "ImagePullBackOff")
                ),
            )
            assert waiting_for_image.status.state == "provisioning"
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()

        fleet_proc = await devfleet.start(tmp_path, config=fleet_proc.config)
        await pushing.push_busybox(registry.host, image)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            vm = await helpers.until_vm(
                fleet,
                vm_id,
                lambda v: (
                    v.status.state != "provisioning"
                    and helpers.container(v, "app").state == "running"
                ),
                timeout=90,
                what="the microVM running once its image exists",
            )
            assert vm.status.state == "running", vm.status
    finally:
        fleet_proc.stop()


async def test_a_delete_cut_short_by_a_crash_is_finished_after_it(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """A delete is stored with the microVM: when fleetd dies while the microVM stops
    (here inside its grace period), the restarted fleetd finishes the stop and forgets
    the microVM, without being asked again."""
    vm_id = helpers.new_id()
    fleet_proc = await devfleet.start(tmp_path, registry=registry.host)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            stubborn = "trap 'echo got TERM' TERM; while :; do sleep 0.1; done"
            await fleet.put_microvm(vm_id, helpers.spec(helpers.shell("app", stubborn)))
            await helpers.until_vm(
                fleet, vm_id, lambda v: helpers.container(v, "app").state == "running"
            )
            await fleet.delete_microvm(vm_id, grace_seconds=3)
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()

        fleet_proc = await devfleet.start(tmp_path, config=fleet_proc.config)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            await waiting.until(
                lambda: _absent(fleet, vm_id), timeout=30, what="the microVM forgotten"
            )
        assert not (tmp_path / "state" / "microvms" / vm_id).exists()
    finally:
        fleet_proc.stop()


async def test_a_restarted_fleetd_does_not_hand_out_just_freed_addresses(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """The pool's cursor and resting addresses survive a crash: a new microVM must not get
    the address of one deleted just before (a client may still be cleaning up after it)."""
    fleet_proc = await devfleet.start(tmp_path, registry=registry.host)
    zone = "eu-central-1a"
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            ids = [helpers.new_id() for _ in range(3)]
            for vm_id in ids:
                await fleet.put_microvm(
                    vm_id, helpers.spec(helpers.shell("app", "sleep 300"), zone=zone)
                )
            freed = set()
            for vm_id in ids[:2]:
                freed.add((await fleet.get_microvm(vm_id)).status.private_ip)
                await fleet.delete_microvm(vm_id, grace_seconds=0)
                await waiting.until(lambda v=vm_id: _absent(fleet, v), what="a microVM deleted")
            kept = (await fleet.get_microvm(ids[2])).status.private_ip
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()

        fleet_proc = await devfleet.start(tmp_path, config=fleet_proc.config)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:
            fresh = await fleet.put_microvm(
                helpers.new_id(), helpers.spec(helpers.shell("app", "sleep 300"), zone=zone)
            )
            assert fresh.status.private_ip not in freed | {kept}
            assert ipaddress.IPv4Address(fresh.status.private_ip) > ipaddress.IPv4Address(kept)
    finally:
        fleet_proc.stop()


def _stat(pid: int) -> tuple[str, int]:
    """A process's name and parent PID, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    name, rest = stat.split("(", 1)[1].rsplit(")", 1)
    return name, int(rest.split()[1])


def _children(pid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _parent_or_none(int(p.name)) == pid
    ]


def _parent_or_none(pid: int) -> int | None:
    try:
        return _stat(pid)[1]
    except (OSError, ValueError, IndexError):
        return None


def _template(fleetd_pid: int) -> int:
    (template,) = [
        c
        for c in _children(fleetd_pid)
        if b"vk_fargate.fleetd.zygote" in Path(f"/proc/{c}/cmdline").read_bytes()
    ]
    return template


async def test_a_pod_is_supervised_by_its_forked_shim_alone(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """The memory a pod costs beyond its container is one shim, forked from the daemon's
    template (so most of its pages are shared), with the container's process as its
    child: no runc process stays beside a running container. A template that dies is
    replaced, and the shims it forked run on."""
    fleet_proc = await devfleet.start(tmp_path, registry=registry.host)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as fleet:

            async def run_one() -> tuple[str, int]:
                vm_id = helpers.new_id()
                app = {"name": "app", "command": ["sleep", "300"]}
                await fleet.put_microvm(vm_id, helpers.spec(app))
                await helpers.until_vm(
                    fleet, vm_id, lambda v: helpers.container(v, "app").state == "running"
                )
                status = supervisor.read_status(tmp_path / "state" / "microvms" / vm_id)
                assert status is not None
                return vm_id, status["shim_pid"]

            first, second = await run_one(), await run_one()
            template = _template(fleet_proc.process.pid)
            for _, shim in (first, second):
                assert _stat(shim) == ("vk-shim", template)
                inside = [_stat(c)[0] for c in _children(shim)]
                assert inside == ["sleep"], f"the shim's children: {inside}"

            os.kill(template, signal.SIGKILL)
            third = await run_one()
            assert _template(fleet_proc.process.pid) != template
            for vm_id, shim in (first, second, third):
                assert (await fleet.get_microvm(vm_id)).status.state == "running"
                assert _stat(shim)[0] == "vk-shim"
    finally:
        fleet_proc.stop()


async def _absent(fleet: client.FleetClient, vm_id: str) -> bool:
    try:
        await fleet.get_microvm(vm_id)
    except errors.NotFound:
        return True
    return False


async def test_drain_announces_then_stops_and_places_elsewhere(small_fleet: devfleet.Fleet) -> None:
    async with client.FleetClient(small_fleet.url, small_fleet.token) as fleet:
        vm_id = helpers.new_id()
        # sleep is the container's PID 1, which ignores TERM: it ends at the grace's KILL.
        spec = helpers.spec(
            helpers.shell("app", "sleep 300"), zone="eu-central-1a", termination_grace_seconds=2
        )
        vm = await fleet.put_microvm(vm_id, spec)
        assert vm.status.host == "small-a"
        await helpers.until_vm(fleet, vm_id, lambda v: v.status.state == "running")
        cursor = (await fleet.list_microvms()).cursor
        host = await fleet.host_action(
            "small-a", models.HostAction(action_type="Drain", grace_seconds=1)
        )
        assert host.state == "draining" and host.drain_deadline is not None
        notices = []
        async for event in fleet.events(cursor):
            if event.type == "maintenance":
                notices.append(event)
                break
        assert notices[0].notice is not None
        assert notices[0].notice.microvm_id == vm_id
        assert f"microVM {vm_id} will be stopped after" in notices[0].notice.message
        stopped = await helpers.until_vm(fleet, vm_id, lambda v: v.status.state == "stopped")
        assert stopped.status.reason == "HostMaintenance"
        elsewhere = await fleet.put_microvm(
            helpers.new_id(), helpers.spec(helpers.shell("app", "sleep 1"))
        )
        assert elsewhere.status.host == "small-b"
        with pytest.raises(errors.InsufficientCapacity):
            await fleet.put_microvm(
                helpers.new_id(), helpers.spec(helpers.shell("a", "sleep 1"), zone="eu-central-1a")
            )
        await fleet.host_action("small-a", models.HostAction(action_type="Activate"))
        back = await fleet.put_microvm(
            helpers.new_id(), helpers.spec(helpers.shell("a", "sleep 1"), zone="eu-central-1a")
        )
        assert back.status.host == "small-a"
