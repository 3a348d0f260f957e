"""Tests of podstatus.compute: phase, conditions, container statuses and IPs from a microVM."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from vk_fargate.controllers import podstatus
from vk_fargate.fleet import models

JSON = dict[str, Any]
UTC = datetime.UTC
CREATED = datetime.datetime(2024, 5, 1, 12, 0, 0, 987654, tzinfo=UTC)
STARTED = datetime.datetime(2024, 5, 1, 12, 0, 3, 500000, tzinfo=UTC)
FINISHED = datetime.datetime(2024, 5, 1, 12, 5, 9, 999999, tzinfo=UTC)
UPDATED = datetime.datetime(2024, 5, 1, 12, 6, 0, 250000, tzinfo=UTC)
IP = "10.0.1.2"


def cs(name: str, state: str, **fields: Any) -> models.ContainerStatus:
    fields.setdefault("restart_count", 0)
    return models.ContainerStatus.model_validate({"name": name, "state": state, **fields})


def running(name: str, **fields: Any) -> models.ContainerStatus:
    # As the fleet reports a container without probes: started and ready as it runs.
    fields.setdefault("ready", True)
    fields.setdefault("started", True)
    return cs(name, "running", started_at=STARTED, container_id=f"vk://{name}", **fields)


def exited(name: str, code: int, **fields: Any) -> models.ContainerStatus:
    return cs(
        name,
        "terminated",
        exit_code=code,
        started_at=STARTED,
        finished_at=FINISHED,
        container_id=f"vk://{name}",
        **fields,
    )


def microvm(
    state: str,
    *,
    containers: list[models.ContainerStatus] | None = None,
    init: list[models.ContainerStatus] | None = None,
    ip: str | None = IP,
    reason: str | None = None,
    message: str | None = None,
) -> models.MicroVM:
    return models.MicroVM(
        id="vm-1",
        spec=models.MicroVMSpec(
            vcpu_millis=250, mem_mib=512, containers=[models.Container(name="app", image="i")]
        ),
        status=models.MicroVMStatus.model_validate(
            {
                "state": state,
                "reason": reason,
                "message": message,
                "private_ip": ip,
                "containers": containers or [],
                "init_containers": init or [],
                "created_at": CREATED,
                "updated_at": UPDATED,
            }
        ),
    )


def pod(containers: tuple[str, ...] = ("app",), init: tuple[str, ...] = ()) -> JSON:
    spec: JSON = {"containers": [{"name": n, "image": f"registry/{n}:1"} for n in containers]}
    if init:
        spec["initContainers"] = [{"name": n, "image": f"registry/{n}:1"} for n in init]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}


def conditions(status: JSON) -> dict[str, JSON]:
    return {c["type"]: c for c in status["conditions"]}


def truth(status: JSON) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


# --- phase ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "provisioning"])
def test_pending_and_provisioning_microvms_make_pending_pods(state: str) -> None:
    status = podstatus.compute(pod(), microvm(state, ip=None))
    assert status["phase"] == "Pending"
    assert truth(status) == {
        "PodReadyToStartContainers": "False",
        "Initialized": "True",
        "ContainersReady": "False",
        "Ready": "False",
        "PodScheduled": "True",
    }


def test_an_unfinished_init_container_keeps_the_pod_pending() -> None:
    vm = microvm("running", init=[running("setup")])
    status = podstatus.compute(pod(init=("setup",)), vm)
    assert status["phase"] == "Pending"
    assert truth(status)["Initialized"] == "False"
    assert conditions(status)["Initialized"]["reason"] == "ContainersNotInitialized"
    assert truth(status)["PodReadyToStartContainers"] == "True"


def test_running_once_init_containers_succeeded() -> None:
    vm = microvm("running", init=[exited("setup", 0)], containers=[running("app")])
    status = podstatus.compute(pod(init=("setup",)), vm)
    assert status["phase"] == "Running"
    assert set(truth(status).values()) == {"True"}
    # A true condition carries no reason: null, so the patch removes one left from False.
    assert all(c["reason"] is None and c["message"] is None for c in status["conditions"])


@pytest.mark.parametrize("reason", ["ContainerCreating", "ErrImagePull", "ImagePullBackOff"])
def test_pending_until_a_container_has_started(reason: str) -> None:
    """The microVM runs, but no container has started yet (an image is being pulled)."""
    vm = microvm("running", containers=[cs("app", "waiting", reason=reason)])
    assert podstatus.compute(pod(), vm)["phase"] == "Pending"
    restarted = cs("app", "waiting", reason="CrashLoopBackOff", restart_count=2)
    assert podstatus.compute(pod(), microvm("running", containers=[restarted]))["phase"] == (
        "Running"
    )


def test_running_but_not_ready_while_a_container_waits() -> None:
    vm = microvm(
        "running",
        containers=[running("app"), cs("log", "waiting", reason="CrashLoopBackOff")],
    )
    status = podstatus.compute(pod(("app", "log")), vm)
    assert status["phase"] == "Running"
    assert truth(status)["ContainersReady"] == "False"
    assert truth(status)["Ready"] == "False"
    assert conditions(status)["Ready"]["reason"] == "ContainersNotReady"
    assert conditions(status)["ContainersReady"]["reason"] == "ContainersNotReady"


def test_a_stopping_microvm_still_runs_the_pod() -> None:
    status = podstatus.compute(pod(), microvm("stopping", containers=[running("app")]))
    assert status["phase"] == "Running"
    assert truth(status)["PodReadyToStartContainers"] == "True"


def test_succeeded_when_every_container_exited_zero() -> None:
    vm = microvm("stopped", containers=[exited("app", 0), exited("log", 0)], reason="Completed")
    status = podstatus.compute(pod(("app", "log")), vm)
    assert status["phase"] == "Succeeded"
    assert truth(status)["Ready"] == "False"
    assert truth(status)["PodReadyToStartContainers"] == "False"
    assert "reason" not in status


@pytest.mark.parametrize("code", [1, 137])
def test_failed_when_a_container_exited_non_zero(code: int) -> None:
    vm = microvm("stopped", containers=[exited("app", 0), exited("log", code)])
    assert podstatus.compute(pod(("app", "log")), vm)["phase"] == "Failed"


def test_failed_when_a_container_never_ran() -> None:
    vm = microvm("stopped", containers=[exited("app", 0), cs("log", "waiting")])
    assert podstatus.compute(pod(("app", "log")), vm)["phase"] == "Failed"


def test_failed_on_init_error() -> None:
    vm = microvm(
        "stopped",
        init=[exited("setup", 2)],
        reason="InitError",
        message="init container setup failed",
    )
    status = podstatus.compute(pod(init=("setup",)), vm)
    assert status["phase"] == "Failed"
    assert truth(status)["Initialized"] == "False"
    init = status["initContainerStatuses"][0]
    assert init["ready"] is False
    assert init["state"]["terminated"]["exitCode"] == 2
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_init_error_fails_the_pod_even_with_zero_exit_codes() -> None:
    vm = microvm("stopped", containers=[exited("app", 0)], reason="InitError")
    assert podstatus.compute(pod(), vm)["phase"] == "Failed"


def test_a_failed_microvm_copies_reason_and_message() -> None:
    vm = microvm("failed", reason="BootTimeout", message="the guest did not boot in 30s")
    status = podstatus.compute(pod(), vm)
    assert status["phase"] == "Failed"
    assert status["reason"] == "BootTimeout"
    assert status["message"] == "the guest did not boot in 30s"


def test_a_failed_microvm_without_reason_is_provider_failed() -> None:
    status = podstatus.compute(pod(), microvm("failed"))
    assert (status["phase"], status["reason"]) == ("Failed", "ProviderFailed")
    assert status["message"] == "the microVM failed"


# --- conditions and timestamps ----------------------------------------------------------


def test_conditions_shape_and_second_precision_timestamps() -> None:
    vm = microvm("running", containers=[running("app")])
    status = podstatus.compute(pod(), vm, now=UPDATED)
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    ]
    by_type = conditions(status)
    assert by_type["PodScheduled"] == {
        "type": "PodScheduled",
        "status": "True",
        "reason": None,
        "message": None,
        "lastProbeTime": None,
        "lastTransitionTime": "2024-05-01T12:06:00Z",
    }
    assert by_type["Ready"]["lastTransitionTime"] == "2024-05-01T12:06:00Z"
    assert status["startTime"] == "2024-05-01T12:00:00Z"


def test_a_transition_is_stamped_when_written_and_a_steady_condition_keeps_its_time() -> None:
    """Ready's time is when the API server learns of it, not when the microVM started
    (a benchmark reading it would otherwise flatter the provider)."""
    before = [
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2024-05-01T12:00:01Z"},
        {"type": "Ready", "status": "False", "lastTransitionTime": "2024-05-01T12:00:01Z"},
    ]
    vm = microvm("running", containers=[running("app")])
    status = podstatus.compute(pod(), vm, previous=before, now=UPDATED)
    by_type = conditions(status)
    assert by_type["Initialized"]["lastTransitionTime"] == "2024-05-01T12:00:01Z"
    assert by_type["Ready"]["lastTransitionTime"] == "2024-05-01T12:06:00Z"
    assert by_type["ContainersReady"]["lastTransitionTime"] == "2024-05-01T12:06:00Z"
    again = podstatus.compute(pod(), vm, previous=status["conditions"])
    assert again["conditions"] == status["conditions"], "nothing changed: nothing to write"


def test_timestamp_converts_to_utc_and_drops_fractions() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    moment = datetime.datetime(2024, 5, 1, 14, 30, 15, 999999, tzinfo=plus_two)
    assert podstatus.timestamp(moment) == "2024-05-01T12:30:15Z"
    assert podstatus.timestamp(None) is None


# --- container statuses -----------------------------------------------------------------


def test_a_running_container() -> None:
    status = podstatus.compute(pod(), microvm("running", containers=[running("app")]))
    assert status["containerStatuses"] == [
        {
            "name": "app",
            "image": "registry/app:1",
            "imageID": "",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2024-05-01T12:00:03Z"}},
            "lastState": {},
            "containerID": "vk://app",
        }
    ]


def test_an_unreported_container_is_creating() -> None:
    status = podstatus.compute(pod(), microvm("provisioning", ip=None))
    assert status["containerStatuses"] == [
        {
            "name": "app",
            "image": "registry/app:1",
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
            "lastState": {},
        }
    ]


def test_a_waiting_container_keeps_its_reason_and_message() -> None:
    waiting = cs("app", "waiting", reason="ErrImagePull", message="no such image")
    status = podstatus.compute(pod(), microvm("running", containers=[waiting]))
    c = status["containerStatuses"][0]
    assert c["state"] == {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}
    assert (c["ready"], c["started"]) == (False, False)


def test_a_terminated_container() -> None:
    vm = microvm("stopped", containers=[exited("app", 3, reason="Error", message="boom")])
    c = podstatus.compute(pod(), vm)["containerStatuses"][0]
    assert c["state"] == {
        "terminated": {
            "exitCode": 3,
            "reason": "Error",
            "message": "boom",
            "startedAt": "2024-05-01T12:00:03Z",
            "finishedAt": "2024-05-01T12:05:09Z",
            "containerID": "vk://app",
        }
    }
    assert (c["ready"], c["started"]) == (False, False)


@pytest.mark.parametrize(("code", "reason"), [(0, "Completed"), (1, "Error")])
def test_a_terminated_container_without_reason_gets_kubelets(code: int, reason: str) -> None:
    vm = microvm("stopped", containers=[exited("app", code)])
    terminated = podstatus.compute(pod(), vm)["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (code, reason)
    assert "message" not in terminated


def test_last_state_and_restart_count() -> None:
    last = models.Termination(
        exit_code=137, reason="OOMKilled", started_at=CREATED, finished_at=STARTED
    )
    vm = microvm("running", containers=[running("app", restart_count=4, last_termination=last)])
    c = podstatus.compute(pod(), vm)["containerStatuses"][0]
    assert c["restartCount"] == 4
    assert c["lastState"] == {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": "2024-05-01T12:00:00Z",
            "finishedAt": "2024-05-01T12:00:03Z",
        }
    }


def test_last_state_without_times_or_reason() -> None:
    vm = microvm("running", containers=[running("app", last_termination={"exit_code": 1})])
    c = podstatus.compute(pod(), vm)["containerStatuses"][0]
    assert c["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}


def test_statuses_follow_the_spec_order_and_images() -> None:
    vm = microvm("running", containers=[running("b"), running("a")])
    status = podstatus.compute(pod(("a", "b")), vm)
    assert [(c["name"], c["image"]) for c in status["containerStatuses"]] == [
        ("a", "registry/a:1"),
        ("b", "registry/b:1"),
    ]


def test_init_container_statuses() -> None:
    vm = microvm(
        "running",
        init=[exited("one", 0), running("two")],
        containers=[],
    )
    status = podstatus.compute(pod(init=("one", "two", "three")), vm)
    one, two, three = status["initContainerStatuses"]
    assert (one["name"], one["ready"], one["started"]) == ("one", True, False)
    assert one["state"]["terminated"]["reason"] == "Completed"
    assert one["image"] == "registry/one:1"
    assert (two["name"], two["ready"], two["started"]) == ("two", False, True)
    assert three["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["phase"] == "Pending"


def test_no_init_container_statuses_without_init_containers() -> None:
    status = podstatus.compute(pod(), microvm("running", containers=[running("app")]))
    assert "initContainerStatuses" not in status


# --- addresses --------------------------------------------------------------------------


def test_pod_and_host_ips_are_the_microvms() -> None:
    status = podstatus.compute(pod(), microvm("running", containers=[running("app")]))
    assert status["podIP"] == IP
    assert status["hostIP"] == IP
    assert status["podIPs"] == [{"ip": IP}]
    assert status["hostIPs"] == [{"ip": IP}]


def test_no_ips_before_the_microvm_has_one() -> None:
    status = podstatus.compute(pod(), microvm("pending", ip=None))
    assert not {"podIP", "podIPs", "hostIP", "hostIPs"} & set(status)


def test_a_running_container_its_readiness_probe_fails_is_not_ready() -> None:
    """Readiness (the fleet's ``ready``) drives the container's ``ready`` and the pod's
    ContainersReady and Ready; the pod still runs."""
    vm = microvm("running", containers=[running("app", ready=False)])
    status = podstatus.compute(pod(), vm, now=UPDATED)
    (app,) = status["containerStatuses"]
    assert (app["ready"], app["started"]) == (False, True)
    assert status["phase"] == "Running"
    found = conditions(status)
    for kind in ("ContainersReady", "Ready"):
        assert (found[kind]["status"], found[kind]["reason"]) == ("False", "ContainersNotReady")
    assert found["Initialized"]["status"] == "True"


def test_a_container_its_startup_probe_has_not_passed_is_not_started() -> None:
    vm = microvm("running", containers=[running("app", ready=False, started=False)])
    (app,) = podstatus.compute(pod(), vm, now=UPDATED)["containerStatuses"]
    assert (app["ready"], app["started"]) == (False, False)


def test_readiness_flips_only_the_conditions_it_changes() -> None:
    """Ready and ContainersReady keep their own lastTransitionTime, moved only when their
    status changes; the others keep theirs."""
    first = podstatus.compute(pod(), microvm("running", containers=[running("app")]), now=UPDATED)
    later = UPDATED + datetime.timedelta(minutes=1)
    vm = microvm("running", containers=[running("app", ready=False)])
    second = podstatus.compute(pod(), vm, previous=first["conditions"], now=later)
    before, after = conditions(first), conditions(second)
    for kind in ("ContainersReady", "Ready"):
        assert after[kind]["lastTransitionTime"] == "2024-05-01T12:07:00Z"
    for kind in ("Initialized", "PodScheduled", "PodReadyToStartContainers"):
        assert after[kind]["lastTransitionTime"] == before[kind]["lastTransitionTime"]
    third = podstatus.compute(
        pod(), vm, previous=second["conditions"], now=later + datetime.timedelta(minutes=1)
    )
    assert conditions(third)["Ready"]["lastTransitionTime"] == "2024-05-01T12:07:00Z"


def test_a_sidecar_not_ready_keeps_the_pod_not_ready() -> None:
    """As the kubelet's ContainersReady: sidecars (restartable init containers) count."""
    spec = pod()
    spec["spec"]["initContainers"] = [
        {"name": "proxy", "image": "registry/proxy:1", "restartPolicy": "Always"}
    ]
    vm = microvm("running", containers=[running("proxy", ready=False), running("app")])
    status = podstatus.compute(spec, vm, now=UPDATED)
    (proxy,) = status["initContainerStatuses"]
    assert (proxy["ready"], proxy["started"]) == (False, True)
    assert conditions(status)["Ready"]["status"] == "False"
    vm = microvm("running", containers=[running("proxy"), running("app")])
    assert conditions(podstatus.compute(spec, vm, now=UPDATED))["Ready"]["status"] == "True"


def test_readiness_gates_hold_ready_until_their_conditions_are_true() -> None:
    """As the kubelet: Ready needs ready containers and each readiness gate's condition
    (set by its own controller) True; ContainersReady follows the containers alone."""
    gated = pod()
    gated["spec"]["readinessGates"] = [{"conditionType": "example.com/lb-registered"}]
    vm = microvm("running", containers=[running("app")])
    first = conditions(podstatus.compute(gated, vm, now=UPDATED))
    assert first["ContainersReady"]["status"] == "True"
    assert (first["Ready"]["status"], first["Ready"]["reason"], first["Ready"]["message"]) == (
        "False",
        "ReadinessGatesNotReady",
        'corresponding condition of pod readiness gate "example.com/lb-registered" does not exist.',
    )
    gate = {"type": "example.com/lb-registered", "status": "False"}
    second = conditions(podstatus.compute(gated, vm, previous=[gate], now=UPDATED))
    assert second["Ready"]["message"] == (
        'the status of pod readiness gate "example.com/lb-registered" is not "True", but False'
    )
    opened = [{**gate, "status": "True"}]
    third = conditions(podstatus.compute(gated, vm, previous=opened, now=UPDATED))
    assert third["Ready"]["status"] == "True"
    assert "example.com/lb-registered" not in third, "the gate's condition is not ours"


def test_termination_messages_in_state_and_last_state() -> None:
    last = models.Termination(exit_code=1, reason="Error", message="it went wrong")
    vm = microvm(
        "running",
        containers=[
            running("app", last_termination=last),
            exited("done", 2, message="bye\n"),
        ],
    )
    app, done = podstatus.compute(pod(("app", "done")), vm)["containerStatuses"]
    assert app["lastState"] == {
        "terminated": {"exitCode": 1, "reason": "Error", "message": "it went wrong"}
    }
    assert done["state"]["terminated"]["message"] == "bye\n"


def sidecar_pod() -> JSON:
    spec = pod(("job",), init=("setup",))
    spec["spec"]["initContainers"].append(
        {"name": "logs", "image": "registry/logs:1", "restartPolicy": "Always"}
    )
    return spec


def test_a_sidecar_the_fleet_reports_among_init_containers_runs_after_a_restart() -> None:
    vm = microvm(
        "running",
        init=[exited("setup", 0), running("logs", restart_count=1)],
        containers=[running("job")],
    )
    status = podstatus.compute(sidecar_pod(), vm, now=UPDATED)
    setup, logs = status["initContainerStatuses"]
    assert "terminated" in setup["state"] and "running" in logs["state"]
    assert (logs["restartCount"], logs["started"], logs["ready"]) == (1, True, True)
    assert status["phase"] == "Running"
    assert conditions(status)["Initialized"]["status"] == "True"


def test_a_pod_whose_app_containers_succeeded_succeeds_though_its_sidecar_was_killed() -> None:
    vm = microvm(
        "stopped",
        reason="Completed",
        init=[exited("setup", 0), exited("logs", 143)],
        containers=[exited("job", 0)],
    )
    assert podstatus.compute(sidecar_pod(), vm, now=UPDATED)["phase"] == "Succeeded"
    vm = microvm(
        "stopped",
        reason="Error",
        init=[exited("setup", 0), exited("logs", 0)],
        containers=[exited("job", 1)],
    )
    assert podstatus.compute(sidecar_pod(), vm, now=UPDATED)["phase"] == "Failed"


def test_a_pod_stays_initialized_and_running_while_its_sidecar_restarts() -> None:
    """As the kubelet's HasAnyRegularContainerStarted: an app container has run, so the
    sidecar in its back-off does not take the pod back to Pending."""
    backing_off = cs("logs", "waiting", reason="CrashLoopBackOff", restart_count=1)
    vm = microvm("running", init=[exited("setup", 0), backing_off], containers=[running("job")])
    status = podstatus.compute(sidecar_pod(), vm, now=UPDATED)
    assert status["phase"] == "Running"
    assert conditions(status)["Initialized"]["status"] == "True"
    assert conditions(status)["Ready"]["status"] == "False"  # the sidecar is not ready
    vm = microvm(
        "running", init=[exited("setup", 0), backing_off], containers=[cs("job", "waiting")]
    )
    status = podstatus.compute(sidecar_pod(), vm, now=UPDATED)
    assert (status["phase"], conditions(status)["Initialized"]["status"]) == ("Pending", "False")
