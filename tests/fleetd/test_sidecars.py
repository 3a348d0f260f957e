"""Native sidecars as the kubelet runs them (init containers with restart_policy
Always), against the real daemon, runc and busybox: started in their place among the
init containers, restarted on exit whatever the pod's policy, stopped after the app
containers in reverse order."""

from __future__ import annotations

from typing import Any

from tests.fleetd import helpers
from vk_fargate.fleet import client, models

WORK = [{"name": "work", "mount_path": "/work"}]
# Counts its instances in /work/n; the first passes its startup probe (/work/up),
# waits for init container b to have run, and exits 3 a second later; the next ones
# run until TERM.
SIDECAR = """
n=$(( $(cat /work/n 2>/dev/null || echo 0) + 1 )); echo $n > /work/n
if [ $n = 1 ]; then
  sleep 0.5; touch /work/up
  while [ ! -e /work/b-done ]; do sleep 0.1; done
  sleep 1; exit 3
fi
trap 'exit 0' TERM
while :; do sleep 0.1; done
"""


def init(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "busybox", **helpers.shell(name, script), **extra}


def sidecar(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return init(name, script, restart_policy="Always", **extra)


async def _deleted(fleet: client.FleetClient, vm_id: str, since: int) -> models.MicroVM:
    """The microVM as the fleet's last event about it (its deletion) has it."""
    async for event in fleet.events(since):
        if event.microvm_id == vm_id and event.type == "deleted":
            assert event.microvm is not None
            return event.microvm
    raise AssertionError("the event stream ended")


async def test_a_sidecar_starts_in_its_place_is_restarted_and_the_pod_completes(
    fleet_client: client.FleetClient,
) -> None:
    """Init container b runs only once sidecar s has passed its startup probe (else its
    ``test`` fails, and with restart policy Never the pod too); s outlives a and b, is
    restarted when it exits though the pod's policy is Never, and is stopped once the
    job has completed, which completes the pod."""
    vm_id = helpers.new_id()
    up = {"exec": {"command": ["test", "-e", "/work/up"]}, "period_seconds": 1}
    spec = helpers.spec(
        helpers.shell(
            "job",
            'while [ "$(cat /work/n)" != 2 ]; do sleep 0.1; done; echo done',
            volume_mounts=WORK,
        ),
        init_containers=[
            init("a", "sleep 0.2"),
            sidecar("s", SIDECAR, volume_mounts=WORK, startup_probe=up),
            init("b", "test -e /work/up && touch /work/b-done", volume_mounts=WORK),
        ],
        volumes=[{"name": "work", "empty_dir": {}}],
        restart_policy="Never",
    )
    await fleet_client.put_microvm(vm_id, spec)
    running = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: (
            helpers.container(v, "s").restart_count == 1
            and helpers.container(v, "s").state == "running"
        ),
        what="the sidecar restarted",
    )
    a, s, b = (helpers.container(running, n) for n in ("a", "s", "b"))
    assert (a.state, a.exit_code, b.state, b.exit_code) == ("terminated", 0, "terminated", 0)
    first = s.last_termination
    assert first is not None and first.exit_code == 3
    assert a.finished_at and b.started_at and b.finished_at and first.started_at
    assert a.finished_at <= first.started_at <= b.started_at
    assert first.finished_at and b.finished_at <= first.finished_at  # it outlived b
    done = await helpers.until_vm(fleet_client, vm_id, lambda v: v.status.state == "stopped")
    assert done.status.reason == "Completed"
    job, s = helpers.container(done, "job"), helpers.container(done, "s")
    assert (job.exit_code, s.state, s.restart_count) == (0, "terminated", 1)
    assert job.finished_at and s.finished_at and job.finished_at <= s.finished_at
    assert [c.name for c in done.status.init_containers] == ["a", "s", "b"]
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_sidecars_stop_after_the_app_containers_last_started_first(
    fleet_client: client.FleetClient,
) -> None:
    """At a delete, the app takes 0.5 s to end on TERM; each sidecar ends at once on
    TERM, so only the kubelet's order has them end after it, second before first."""
    vm_id = helpers.new_id()
    quick = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
    slow = "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.1; done"
    spec = helpers.spec(
        helpers.shell("app", slow),
        init_containers=[sidecar("first", quick), sidecar("second", quick)],
    )
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: all(
            helpers.container(v, n).state == "running" for n in ("app", "first", "second")
        ),
        what="all running",
    )
    since = (await fleet_client.list_microvms()).cursor
    await fleet_client.delete_microvm(vm_id, grace_seconds=20)
    last = await _deleted(fleet_client, vm_id, since)
    app, first, second = (helpers.container(last, n) for n in ("app", "first", "second"))
    assert (app.exit_code, first.exit_code, second.exit_code) == (0, 0, 0)  # none killed
    assert app.finished_at and first.finished_at and second.finished_at
    assert app.finished_at <= second.finished_at <= first.finished_at


async def test_a_delete_during_init_stops_the_init_container_then_the_sidecar(
    fleet_client: client.FleetClient,
) -> None:
    """An init container still running beside a sidecar gets SIGTERM at once at a
    delete (it ends on it, exit 0, not killed at the end of the grace period), and the
    sidecar after it."""
    vm_id = helpers.new_id()
    quick = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
    slow = "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.1; done"
    spec = helpers.spec(
        helpers.shell("app", "echo never runs"),
        init_containers=[sidecar("logs", quick), init("setup", slow)],
    )
    await fleet_client.put_microvm(vm_id, spec)
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: all(helpers.container(v, n).state == "running" for n in ("logs", "setup")),
        what="the sidecar and the init container running",
    )
    since = (await fleet_client.list_microvms()).cursor
    await fleet_client.delete_microvm(vm_id, grace_seconds=20)
    last = await _deleted(fleet_client, vm_id, since)
    logs, setup = helpers.container(last, "logs"), helpers.container(last, "setup")
    assert (logs.exit_code, setup.exit_code) == (0, 0)
    assert setup.finished_at and logs.finished_at and setup.finished_at <= logs.finished_at
    assert helpers.container(last, "app").state == "waiting"


async def test_a_sidecar_failing_its_liveness_probe_is_restarted_alone(
    fleet_client: client.FleetClient,
) -> None:
    """The shim probes sidecars as app containers: the first instance makes its own
    liveness probe fail (/work/sick), is stopped for it and runs again; the app stays."""
    vm_id = helpers.new_id()
    script = """
    if [ -e /work/was-sick ]; then rm -f /work/sick; else touch /work/sick /work/was-sick; fi
    trap 'exit 0' TERM
    while :; do sleep 0.1; done
    """
    alive = {
        "exec": {"command": ["sh", "-c", "test ! -e /work/sick"]},
        "period_seconds": 1,
        "failure_threshold": 1,
    }
    spec = helpers.spec(
        helpers.shell("app", "trap 'exit 0' TERM; while :; do sleep 0.1; done"),
        init_containers=[sidecar("logs", script, volume_mounts=WORK, liveness_probe=alive)],
        volumes=[{"name": "work", "empty_dir": {}}],
    )
    await fleet_client.put_microvm(vm_id, spec)
    vm = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: (
            helpers.container(v, "logs").restart_count == 1
            and helpers.container(v, "logs").state == "running"
        ),
        what="the sidecar running again",
    )
    logs, app = helpers.container(vm, "logs"), helpers.container(vm, "app")
    assert logs.last_termination is not None and logs.last_termination.exit_code == 0  # TERM
    assert (app.state, app.restart_count) == ("running", 0)
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
