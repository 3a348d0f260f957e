"""What runs inside a microVM: init containers, restart policy, grace periods, logs,
limits and networking, against the real daemon (process runtime)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path

import aiohttp
import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client, models

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


async def _logs(fleet: client.FleetClient, vm_id: str, name: str, **options: object) -> str:
    return b"".join([c async for c in fleet.logs(vm_id, name, **options)]).decode()


async def test_init_containers_run_in_order_before_app_containers(
    fleet_client: client.FleetClient,
) -> None:
    """Each in its own root (files do not pass between them without a volume), so the
    order is read from their start and end times."""
    vm_id = helpers.new_id()
    spec = helpers.spec(
        helpers.shell("app", "test -e /order && echo shared || echo own root"),
        init_containers=[
            {"name": "first", "image": "busybox", "command": ["sh", "-c", "sleep 0.3 > /order"]},
            {"name": "second", "image": "busybox", "command": ["sh", "-c", "sleep 0.3"]},
        ],
        restart_policy="Never",
    )
    await fleet_client.put_microvm(vm_id, spec)
    done = await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    assert done.status.reason == "Completed"
    assert [c.state for c in done.status.init_containers] == ["terminated", "terminated"]
    first, second = (helpers.container(done, n) for n in ("first", "second"))
    app = helpers.container(done, "app")
    assert first.exit_code == second.exit_code == app.exit_code == 0
    assert first.finished_at and second.started_at and second.finished_at and app.started_at
    assert first.finished_at <= second.started_at < second.finished_at <= app.started_at
    assert await _logs(fleet_client, vm_id, "app") == "own root\n"
    await fleet_client.delete_microvm(vm_id)


async def test_failing_init_container_with_never_stops_the_microvm(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(
        helpers.shell("app", "echo never runs"),
        init_containers=[{"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 7"]}],
        restart_policy="Never",
    )
    await fleet_client.put_microvm(vm_id, spec)
    done = await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    assert done.status.reason == "InitError"
    assert helpers.container(done, "init").exit_code == 7
    assert helpers.container(done, "app").state == "waiting"
    await fleet_client.delete_microvm(vm_id)


@pytest.mark.parametrize(
    ("policy", "script", "restarts"),
    [
        ("OnFailure", "exit 1", True),
        ("OnFailure", "exit 0", False),
        ("Always", "exit 0", True),
        ("Never", "exit 1", False),
    ],
)
async def test_restart_policy(
    fleet_client: client.FleetClient, policy: str, script: str, restarts: bool
) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("app", f"echo run; {script}"), restart_policy=policy)
    await fleet_client.put_microvm(vm_id, spec)
    if restarts:
        vm = await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: helpers.container(v, "app").restart_count >= 2,
            what="two restarts",
        )
        app = helpers.container(vm, "app")
        assert app.last_termination is not None
        assert vm.status.state == "running"
        assert await _logs(fleet_client, vm_id, "app", previous=True) == "run\n"
    else:
        vm = await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
        assert helpers.container(vm, "app").restart_count == 0
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_delete_kills_after_the_grace_period(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    stubborn = "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done"
    events_from = (await fleet_client.list_microvms()).cursor
    await fleet_client.put_microvm(vm_id, helpers.spec(helpers.shell("app", stubborn)))
    await helpers.until_vm(
        fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "running"
    )
    await asyncio.sleep(0.3)  # let the shell install its trap
    loop = asyncio.get_running_loop()
    began = loop.time()
    await fleet_client.delete_microvm(vm_id, grace_seconds=1)
    last: models.MicroVM | None = None
    async for event in fleet_client.events(events_from):
        if event.microvm_id != vm_id:
            continue
        if event.type == "deleted":
            assert event.microvm is not None
            last = event.microvm
            break
    elapsed = loop.time() - began
    assert last is not None
    app = helpers.container(last, "app")
    assert app.state == "terminated"
    assert app.exit_code == 137, "SIGKILL after the grace period"
    assert elapsed >= 1.0


async def test_logs_tail_timestamps_limit_and_follow(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    script = "for i in 1 2 3 4 5; do echo line $i; done; sleep 1; echo late; sleep 1; exit 0"
    await fleet_client.put_microvm(
        vm_id, helpers.spec(helpers.shell("app", script), restart_policy="Never")
    )
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: helpers.container(v, "app").state in ("running", "terminated"),
    )

    async def five_lines() -> bool:  # "running" comes a moment before the first line
        return "line 5\n" in await _logs(fleet_client, vm_id, "app")

    await waiting.until(five_lines, what="the first five lines")
    followed = fleet_client.logs(vm_id, "app", follow=True, tail_lines=2)
    first = b""
    async for chunk in followed:
        first += chunk
        if b"line 5\n" in first:
            break
    assert first.decode().startswith("line 4\n")
    rest = b"".join([c async for c in followed]).decode()
    assert "late\n" in rest, "follow streams what is written later, then ends"
    assert (await _logs(fleet_client, vm_id, "app", tail_lines=1)) == "late\n"
    stamped = await _logs(fleet_client, vm_id, "app", timestamps=True, tail_lines=1)
    assert stamped.endswith("Z late\n") and stamped[:4].isdigit()
    assert await _logs(fleet_client, vm_id, "app", limit_bytes=9) == "line 1\nli"
    assert await _logs(fleet_client, vm_id, "app", tail_lines=0) == ""
    await fleet_client.delete_microvm(vm_id)


async def test_cgroup_limits_match_the_size(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("app", "cat /proc/self/cgroup; sleep 300"))
    spec = spec.model_copy(update={"vcpu_millis": 500, "mem_mib": 1024})
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "running"
    )
    hosts = await fleet_client.hosts()
    limits = hosts[0].limits
    if limits == "cgroup-v1":
        assert (
            Path(f"/sys/fs/cgroup/cpu/vk-fargate/{vm_id}/cpu.cfs_quota_us").read_text().strip()
            == "50000"
        )
        memory = Path(f"/sys/fs/cgroup/memory/vk-fargate/{vm_id}/memory.limit_in_bytes")
        assert int(memory.read_text()) == 1024 * 1024 * 1024
        assert f"vk-fargate/{vm_id}" in await _logs(fleet_client, vm_id, "app")
    elif limits == "cgroup-v2":
        assert Path(f"/sys/fs/cgroup/vk-fargate/{vm_id}/cpu.max").read_text().split()[0] == "50000"
    else:
        assert any("not enforced" in note for note in hosts[0].notes)
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_container_over_the_memory_limit_is_oom_killed(
    fleet_client: client.FleetClient,
) -> None:
    """The microVM's memory limit holds for the container runc runs, and the kernel's
    OOM kill is reported as the kubelet reports it: 137, ``OOMKilled``."""
    if (await fleet_client.hosts())[0].limits == "none":
        pytest.skip("this host enforces no memory limit (no writable memory cgroup)")
    vm_id = helpers.new_id()
    # The shell holds all of a command's output: 1 GiB into a 512 MiB microVM.
    hog = helpers.shell("hog", "x=$(head -c 1073741824 /dev/zero | tr '\\0' x); echo done")
    await fleet_client.put_microvm(vm_id, helpers.spec(hog, restart_policy="Never"))
    done = await helpers.until_vm(
        fleet_client, vm_id, lambda v: v.status.state == "stopped", timeout=120
    )
    hog_status = helpers.container(done, "hog")
    assert (hog_status.exit_code, hog_status.reason) == (137, "OOMKilled"), hog_status
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


@needs_root
async def test_pod_ips_answer_from_the_host_and_two_pods_share_port_80(
    fleet_client: client.FleetClient, fleet: devfleet.Fleet
) -> None:
    ids = [helpers.new_id(), helpers.new_id()]
    for vm_id in ids:
        await fleet_client.put_microvm(vm_id, helpers.spec({"name": "nginx", "image": "nginx"}))
    ips = []
    for vm_id in ids:
        vm = await helpers.until_vm(
            fleet_client, vm_id, lambda v: helpers.container(v, "nginx").state == "running"
        )
        assert vm.status.private_ip is not None
        assert ipaddress.ip_address(vm.status.private_ip).is_private
        ips.append(vm.status.private_ip)
    assert len(set(ips)) == 2
    async with aiohttp.ClientSession() as http:
        for ip in ips:
            assert helpers.route_via_bridge(ip), f"no route to {ip} via a fleetd bridge"

            async def welcome(address: str = ip) -> str | None:
                try:
                    async with http.get(
                        f"http://{address}/", timeout=aiohttp.ClientTimeout(total=2)
                    ) as r:
                        return await r.text()
                except aiohttp.ClientError:
                    return None

            from tests import waiting

            page = await waiting.until(welcome, timeout=60, what=f"nginx on {ip}:80")
            assert "Welcome to nginx!" in page
    for vm_id in ids:
        await fleet_client.delete_microvm(vm_id, grace_seconds=2)


async def test_env_is_passed_and_expanded_with_the_address(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    env = [
        {"name": "GREETING", "value": "hi {private_ip}"},
        {"name": "POD_IP", "value": "{private_ip}", "expand": True},
        {"name": "NODE", "value": "fargate-ip-{private_ip_dashed}.x", "expand": True},
    ]
    spec = helpers.spec(
        helpers.shell("app", 'echo "$GREETING|$POD_IP|$NODE"', env=env), restart_policy="Never"
    )
    vm = await fleet_client.put_microvm(vm_id, spec)
    ip = vm.status.private_ip
    assert ip is not None
    await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    dashed = ip.replace(".", "-")
    assert await _logs(fleet_client, vm_id, "app") == (
        f"hi {{private_ip}}|{ip}|fargate-ip-{dashed}.x\n"
    )
    await fleet_client.delete_microvm(vm_id)


async def test_a_container_sees_its_image_not_the_hosts_files(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    """Before images, a pod could read fleetd's bearer token and its whole state folder."""
    vm_id = helpers.new_id()
    state_dir = Path(fleet.token_file).parent / "state"
    script = (
        f"cat {fleet.token_file} 2>&1; ls {state_dir} 2>&1; ls /usr/sbin 2>&1; "
        "head -1 /etc/passwd; hostname"
    )
    await fleet_client.put_microvm(
        vm_id, helpers.spec(helpers.shell("app", script), restart_policy="Never")
    )
    await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    out = await _logs(fleet_client, vm_id, "app")
    assert fleet.token not in out
    assert "No such file or directory" in out
    assert "nginx" not in out  # the host's /usr/sbin holds nginx; busybox's image does not
    assert "root:x:0:0:root:/root:/bin/sh" in out
    vm = await fleet_client.get_microvm(vm_id)
    assert (helpers.container(vm, "app").image_id or "").startswith(
        "docker.io/library/busybox@sha256:"
    )
    await fleet_client.delete_microvm(vm_id)


async def test_the_pods_names_and_resolver_are_the_specs(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    script = "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf"
    spec = helpers.spec(
        helpers.shell("app", script),
        restart_policy="Never",
        hostname="db-0",
        domain="db.shop.svc.cluster.local",
        hostname_as_fqdn=True,
        host_aliases=[{"ip": "10.9.9.9", "hostnames": ["legacy.local", "old.local"]}],
        dns={
            "nameservers": ["10.96.0.10"],
            "searches": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            "options": ["ndots:5"],
        },
    )
    vm = await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    ip = (await fleet_client.get_microvm(vm_id)).status.private_ip or vm.status.private_ip
    out = await _logs(fleet_client, vm_id, "app")
    fqdn = "db-0.db.shop.svc.cluster.local"
    assert out.startswith(f"{fqdn}\n{fqdn}\n# Kubernetes-managed hosts file.\n"), out
    assert f"{ip}\t{fqdn}\tdb-0\n\n# Entries added by HostAliases.\n" in out
    assert "10.9.9.9\tlegacy.local\told.local\n" in out
    assert out.endswith(
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )
    await fleet_client.delete_microvm(vm_id)


async def test_a_command_missing_from_the_image_is_a_start_error_naming_it(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec({"name": "app", "command": ["no-such-program"]}, restart_policy="Never")
    await fleet_client.put_microvm(vm_id, spec)
    done = await helpers.until_vm(
        fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "terminated"
    )
    app = helpers.container(done, "app")
    assert app.reason == "StartError", app
    assert app.exit_code == 128
    assert "no-such-program" in (app.message or "")
    await fleet_client.delete_microvm(vm_id)


async def test_a_secret_env_value_is_write_only_and_gone_with_the_microvm(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    """A value from a Secret reaches the container, but no answer, event or stored row,
    and nothing of it stays once the microVM is deleted; the state folder is its
    owner's alone."""
    vm_id = helpers.new_id()
    marker = f"s3cret-{helpers.new_id()}"
    events_from = (await fleet_client.list_microvms()).cursor
    app = helpers.shell(
        "app",
        'echo "password is $PASSWORD"; exec sleep 300',
        env=[{"name": "PASSWORD", "value": marker, "secret": True}],
    )
    created = await fleet_client.put_microvm(vm_id, helpers.spec(app))
    assert [(e.name, e.value) for e in created.spec.containers[0].env] == [("PASSWORD", "")]

    async def said() -> bool:
        return marker in await _logs(fleet_client, vm_id, "app")

    await waiting.until(said, what="the container to see the value")
    listed = (await fleet_client.list_microvms()).items
    assert marker not in "".join(vm.model_dump_json() for vm in listed)
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
    async for event in fleet_client.events(events_from):
        assert marker not in event.model_dump_json()
        if event.type == "deleted" and event.microvm_id == vm_id:
            break
    state = fleet.config.parent / "state"
    assert state.stat().st_mode & 0o077 == 0, "the state folder is readable by others"
    holding = [
        str(f)
        for f in state.rglob("*")
        if f.is_file() and not f.is_symlink() and marker.encode() in f.read_bytes()
    ]
    assert holding == [], holding
