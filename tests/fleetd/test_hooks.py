"""Lifecycle hooks and termination messages as the shim runs and reads them beside real
runc containers (busybox's sh), with the fleet's ``container`` events."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests import waiting
from tests.fleetd import helpers
from tests.fleetd.test_probes import collected
from vk_fargate.fleet import client, models
from vk_fargate.fleetd import crilog

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

# PID 1 (sh) prints "term" at SIGTERM and ends; the loop lets the trap run soon.
TRAPPING = "trap 'echo term; exit 0' TERM; echo up; while :; do sleep 0.1; done"
# A liveness probe that says so in the container's log, then fails: a kill at once.
FAILING_LIVENESS = {
    "exec": {"command": ["sh", "-c", "echo probe > /proc/1/fd/1; false"]},
    "initial_delay_seconds": 1,
    "period_seconds": 30,
    "failure_threshold": 1,
    "termination_grace_seconds": 10,
}


async def _logs(fleet: client.FleetClient, vm_id: str, name: str, **options: object) -> str:
    return b"".join([c async for c in fleet.logs(vm_id, name, **options)]).decode()


async def test_post_start_exec_writes_a_file_the_app_reads(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    script = "until [ -e /tmp/hook ]; do sleep 0.1; done; cat /tmp/hook; sleep 1000"
    hook = {"exec": {"command": ["sh", "-c", "echo from-the-hook > /tmp/hook"]}}
    spec = helpers.spec(helpers.shell("app", script, post_start=hook))
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "running"
    )

    async def printed() -> str | None:
        return await _logs(fleet_client, vm_id, "app") or None

    log = await waiting.until(printed, timeout=30, what="the app's output")
    assert log == "from-the-hook\n"
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_failed_post_start_kills_and_restarts_the_container(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    hook = {"exec": {"command": ["sh", "-c", "exit 3"]}}
    spec = helpers.spec(
        helpers.shell("app", TRAPPING, post_start=hook), termination_grace_seconds=5
    )
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        vm = await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: helpers.container(v, "app").restart_count >= 1,
            what="a restart after the failed postStart hook",
        )
        await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: bool(events.texts("FailedPostStartHook") and events.texts("Killing")),
            what="the events",
        )
    app = helpers.container(vm, "app")
    assert app.last_termination is not None
    assert app.last_termination.exit_code == 0  # its TERM trap ran: killed as at a stop
    assert events.texts("FailedPostStartHook")[0] == "PostStartHook failed"
    assert "FailedPostStartHook" in events.texts("Killing")
    assert next(e.warning for e in events.found if e.reason == "FailedPostStartHook") is True
    assert await _logs(fleet_client, vm_id, "app", previous=True) == "up\nterm\n"
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_pre_stop_runs_before_sigterm_and_writes_to_the_log(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    hook = {"exec": {"command": ["sh", "-c", "echo bye > /proc/1/fd/1"]}}
    spec = helpers.spec(
        helpers.shell("app", TRAPPING, pre_stop=hook, liveness_probe=FAILING_LIVENESS)
    )
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: helpers.container(v, "app").restart_count >= 1,
        what="a restart after the liveness kill",
    )
    assert await _logs(fleet_client, vm_id, "app", previous=True) == "up\nprobe\nbye\nterm\n"
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_sleep_pre_stop_delays_the_sigterm(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(
        helpers.shell(
            "app", TRAPPING, pre_stop={"sleep": {"seconds": 2}}, liveness_probe=FAILING_LIVENESS
        )
    )
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: helpers.container(v, "app").restart_count >= 1,
        what="a restart after the liveness kill",
    )
    log = await _logs(fleet_client, vm_id, "app", previous=True, timestamps=True)
    stamps = {}
    for line in log.splitlines():
        moment, _, text = line.partition(" ")
        stamps[text] = crilog.parse_timestamp(moment)
    assert list(stamps) == ["up", "probe", "term"]
    assert (stamps["term"] - stamps["probe"]).total_seconds() >= 2.0  # the hook's sleep
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_termination_message_from_its_file(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    script = "printf 'it went wrong' > /tmp/the-end; exit 3"
    spec = helpers.spec(
        helpers.shell("app", script, termination_message_path="/tmp/the-end"),
    )
    await fleet_client.put_microvm(vm_id, spec)
    vm = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: helpers.container(v, "app").restart_count >= 1,
        what="a restart",
    )
    last = helpers.container(vm, "app").last_termination
    assert last is not None
    assert (last.exit_code, last.message) == (3, "it went wrong")
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_termination_message_falls_back_to_the_log_on_error(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    script = "echo starting; echo broken >&2; exit 2"
    fallback = {"termination_message_policy": "FallbackToLogsOnError"}
    spec = helpers.spec(
        helpers.shell("app", script, **fallback),
        helpers.shell("ok", "echo fine; exit 0", **fallback),
        helpers.shell("default", "printf x > /dev/termination-log; exit 1"),
        restart_policy="Never",
    )
    await fleet_client.put_microvm(vm_id, spec)
    vm = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: all(
            helpers.container(v, n).state == "terminated" for n in ("app", "ok", "default")
        ),
        what="all ended",
    )
    assert helpers.container(vm, "app").message == "starting\nbroken\n"
    assert helpers.container(vm, "ok").message is None  # exit 0: no fallback
    assert helpers.container(vm, "default").message == "x"
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_an_http_pre_stop_and_a_failed_one(fleet_client: client.FleetClient) -> None:
    """httpGet: busybox's httpd runs a CGI that writes into PID 1's stdout; a second
    container's exec hook fails: an event, and its SIGTERM comes all the same."""
    vm_id = helpers.new_id()
    server = r"""
mkdir -p /www/cgi-bin
cat > /www/cgi-bin/quit <<'END'
#!/bin/sh
echo quit via http $HTTP_USER_AGENT > /proc/1/fd/1
printf '\r\n'
END
chmod +x /www/cgi-bin/quit
httpd -p 8080 -h /www
"""
    http_hook = {"http_get": {"port": 8080, "path": "/cgi-bin/quit"}}
    failing = {"exec": {"command": ["sh", "-c", "exit 7"]}}
    spec = helpers.spec(
        helpers.shell("web", server + TRAPPING, pre_stop=http_hook),
        helpers.shell("other", TRAPPING, pre_stop=failing),
        termination_grace_seconds=10,
    )
    async with collected(fleet_client, vm_id) as events:
        await fleet_client.put_microvm(vm_id, spec)
        await helpers.until_vm(
            fleet_client,
            vm_id,
            lambda v: all(helpers.container(v, n).state == "running" for n in ("web", "other")),
        )

        async def until_term(name: str) -> str:
            text = ""
            async for chunk in fleet_client.logs(vm_id, name, follow=True):
                text += chunk.decode()
                if text.endswith("term\n"):
                    break
            return text

        followers = [asyncio.ensure_future(until_term(n)) for n in ("web", "other")]
        await fleet_client.delete_microvm(vm_id, grace_seconds=10)
        web, other = await asyncio.wait_for(asyncio.gather(*followers), timeout=30)

        async def recorded() -> list[str] | None:
            return events.texts("FailedPreStopHook") or None

        await waiting.until(recorded, timeout=30, what="the FailedPreStopHook event")
    seen = f"events: {[(e.container, e.reason, e.message) for e in events.found]}"
    assert web == "up\nquit via http kube-lifecycle/1.36\nterm\n", seen
    assert other == "up\nterm\n", seen
    assert events.texts("FailedPreStopHook") == ["PreStopHook failed"]
    assert [e.container for e in events.found if e.reason == "FailedPreStopHook"] == ["other"]


async def test_running_is_reported_once_post_start_ended(fleet_client: client.FleetClient) -> None:
    """Reported running only after its 2 s postStart hook, with its process's start."""
    vm_id = helpers.new_id()
    spec = helpers.spec(
        helpers.shell("app", "echo up; sleep 1000", post_start={"sleep": {"seconds": 2}})
    )
    await fleet_client.put_microvm(vm_id, spec)
    vm = await helpers.until_vm(
        fleet_client, vm_id, lambda v: helpers.container(v, "app").state == "running"
    )
    seen = models.now()
    app = helpers.container(vm, "app")
    assert app.started_at is not None
    assert (seen - app.started_at).total_seconds() >= 2.0
    assert await _logs(fleet_client, vm_id, "app") == "up\n"  # it ran during the hook
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
