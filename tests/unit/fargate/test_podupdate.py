"""Tests of fargate.podupdate: what a changed pod spec asks of its microVM (UpdatePod), and
of the status podstatus.compute writes for a refused resize and a passed deadline."""

from __future__ import annotations

import datetime
from typing import Any

from vk_fargate.controllers import podstatus
from vk_fargate.fargate import podupdate, sizing
from vk_fargate.fleet import models

JSON = dict[str, Any]
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def pod_spec(**images: str) -> JSON:
    return {
        "initContainers": [
            {"name": "setup", "image": images.get("setup", "busybox:1")},
            {"name": "proxy", "image": images.get("proxy", "envoy:1"), "restartPolicy": "Always"},
        ],
        "containers": [{"name": "web", "image": images.get("web", "nginx:1")}],
    }


def vm_spec() -> models.MicroVMSpec:
    secret = models.EnvVar(name="TOKEN", value="", secret=True)  # as the fleet answers it
    return models.MicroVMSpec(
        vcpu_millis=250,
        mem_mib=512,
        private_ip="10.0.0.7",
        labels={"pod": "p"},
        init_containers=[models.Container(name="setup", image="busybox:1")],
        containers=[
            models.Container(name="proxy", image="envoy:1"),
            models.Container(name="web", image="nginx:1", env=[secret]),
        ],
    )


def test_only_long_running_containers_whose_image_changed_are_named() -> None:
    assert podupdate.changed_images(pod_spec(), vm_spec()) == []
    assert podupdate.changed_images(pod_spec(web="nginx:2"), vm_spec()) == ["web"]
    assert podupdate.changed_images(pod_spec(proxy="envoy:2", web="nginx:2"), vm_spec()) == [
        "proxy",
        "web",
    ]
    # An init container has run: as the kubelet, it is not run again.
    assert podupdate.changed_images(pod_spec(setup="busybox:2"), vm_spec()) == []


def test_the_updated_spec_differs_only_in_the_changed_images_and_keeps_secrets() -> None:
    current = vm_spec()
    wanted = current.model_copy(
        update={
            "private_ip": None,  # the scheduler's build has no placement
            "containers": [
                models.Container(name="proxy", image="envoy:1"),
                models.Container(
                    name="web",
                    image="nginx:2",
                    image_pull_policy="Always",
                    pull_credentials="u:p",
                    env=[models.EnvVar(name="TOKEN", value="s3cret", secret=True)],
                ),
            ],
        }
    )
    updated = podupdate.with_images(current, wanted, ["web"])
    web = updated.containers[1]
    assert (web.image, web.image_pull_policy, web.pull_credentials) == ("nginx:2", "Always", "u:p")
    assert web.env[0].value == "s3cret", "an update must not blank a secret the fleet keeps"
    assert updated.private_ip == "10.0.0.7" and updated.containers[0] == current.containers[0]
    blanked, _ = models.without_secrets(models.without_credentials(updated)[0])
    web_before = blanked.containers[1].model_copy(
        update={"image": "nginx:1", "image_pull_policy": None}
    )
    back = blanked.model_copy(update={"containers": [blanked.containers[0], web_before]})
    assert back == current, "nothing but the image fields of web may differ"


def test_the_deadline_counts_from_the_start_time() -> None:
    pod: JSON = {"spec": {}, "status": {"startTime": "2026-01-01T12:00:00Z"}}
    assert podupdate.deadline_left(pod, T0) is None
    pod["spec"]["activeDeadlineSeconds"] = 30
    assert podupdate.deadline_left(pod, T0 + datetime.timedelta(seconds=10)) == 20
    assert podupdate.deadline_left(pod, T0 + datetime.timedelta(seconds=31)) == -1
    assert podupdate.deadline_left({"spec": {"activeDeadlineSeconds": 5}}, T0) is None


def test_a_resize_is_refused_only_when_it_changes_the_fargate_size() -> None:
    spec = vm_spec()
    small = {"containers": [{"name": "web", "resources": {"requests": {"cpu": "100m"}}}]}
    assert sizing.size(small) == sizing.Size(250, 512)
    assert podupdate.resize_refusal(small, spec) is None  # rounded up to the same size
    big = {"containers": [{"name": "web", "resources": {"requests": {"cpu": "2"}}}]}
    refused = podupdate.resize_refusal(big, spec)
    assert refused is not None and "0.25vCPU 0.5GB" in refused and "2vCPU 4GB" in refused
    huge = {"containers": [{"name": "web", "resources": {"requests": {"cpu": "64"}}}]}
    assert "fits no Fargate size" in (podupdate.resize_refusal(huge, spec) or "")


def _vm(state: str = "running") -> models.MicroVM:
    status = models.MicroVMStatus(
        state=state,  # type: ignore[arg-type]
        private_ip="10.0.0.7",
        containers=[
            models.ContainerStatus(name="web", state="running", restart_count=0, started_at=T0)
        ],
        created_at=T0,
        updated_at=T0,
    )
    return models.MicroVM(id="uid-1", spec=vm_spec(), status=status)


def test_a_refused_resize_is_a_pod_resize_pending_condition_and_goes_when_taken_back() -> None:
    pod = {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}
    status = podstatus.compute(pod, _vm(), now=T0, resize_pending="cannot")
    pending = [c for c in status["conditions"] if c["type"] == "PodResizePending"]
    assert pending == [
        {
            "type": "PodResizePending",
            "status": "True",
            "reason": "Infeasible",
            "message": "cannot",
            "lastProbeTime": None,
            "lastTransitionTime": "2026-01-01T12:00:00Z",
        }
    ]
    after = podstatus.compute(pod, _vm(), previous=status["conditions"], now=T0)
    assert {"type": "PodResizePending", "$patch": "delete"} in after["conditions"]
    again = podstatus.compute(pod, _vm(), previous=after["conditions"], now=T0)
    assert all(c["type"] != "PodResizePending" for c in again["conditions"])


def test_a_pod_failed_for_its_deadline_stays_failed_while_its_microvm_runs() -> None:
    pod = {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}
    failed = (podupdate.DEADLINE_REASON, podupdate.DEADLINE_MESSAGE)
    status = podstatus.compute(pod, _vm(), now=T0, failed=failed)
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_containers_report_what_they_asked_for_unless_a_resize_is_refused() -> None:
    spec = {
        "containers": [
            {"name": "web", "resources": {"requests": {"memory": "400Mi"}, "claims": []}},
            {"name": "bare"},
        ]
    }
    assert podupdate.allocated(spec, {}, refused=False) == {
        "web": {"requests": {"memory": "400Mi"}},
        "bare": {},
    }
    before = {"containerStatuses": [{"name": "web", "resources": {"requests": {"memory": "64Mi"}}}]}
    assert podupdate.allocated(spec, before, refused=True)["web"] == {
        "requests": {"memory": "64Mi"}
    }
