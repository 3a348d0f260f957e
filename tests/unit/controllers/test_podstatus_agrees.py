"""``podstatus.agrees``: whether the pod's status, as the API server has it, already says
what the provider would write. The comparison is with the pod, never with a copy of
what was sent, so another writer's change is seen and written over."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

from vk_fargate.controllers import podstatus
from vk_fargate.fleet import models

JSON = dict[str, Any]
AT = datetime.datetime(2024, 5, 1, 12, 0, 3, tzinfo=datetime.UTC)
POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
    "spec": {"containers": [{"name": "app", "image": "registry/app:1"}]},
}


def _vm(state: str, *, running: bool = True, reason: str | None = None) -> models.MicroVM:
    containers = [
        {
            "name": "app",
            "state": "running",
            "restart_count": 0,
            "started_at": AT,
            "container_id": "vk://app",
            "ready": True,
            "started": True,
        }
    ]
    return models.MicroVM(
        id="vm-1",
        spec=models.MicroVMSpec(
            vcpu_millis=250, mem_mib=512, containers=[models.Container(name="app", image="i")]
        ),
        status=models.MicroVMStatus.model_validate(
            {
                "state": state,
                "reason": reason,
                "private_ip": "10.0.1.2",
                "containers": containers if running else [],
                "created_at": AT,
                "updated_at": AT,
            }
        ),
    )


def _as_stored(status: JSON) -> JSON:
    """``status`` as the API server stores and returns it after the provider's patch:
    null fields gone, except the condition's ``lastProbeTime`` (always there), plus a
    field the server may set that the provider does not write."""
    stored: JSON = json.loads(json.dumps(status))
    for condition in stored["conditions"]:
        for name in ("reason", "message"):
            if condition.get(name) is None:
                condition.pop(name, None)
        condition["observedGeneration"] = 1
    return stored


def _written() -> JSON:
    return podstatus.compute(POD, _vm("running"))


def test_a_status_that_says_it_already_agrees() -> None:
    status = _written()
    assert podstatus.agrees(_as_stored(status), status)


def test_a_condition_someone_else_changed_does_not_agree() -> None:
    status = _written()
    stored = _as_stored(status)
    ready = next(c for c in stored["conditions"] if c["type"] == "Ready")
    ready.update(status="False", reason="Tampered")
    assert not podstatus.agrees(stored, status)


def test_a_phase_or_a_container_state_someone_else_changed_does_not_agree() -> None:
    status = _written()
    stored = _as_stored(status)
    stored["phase"] = "Pending"
    assert not podstatus.agrees(stored, status)
    stored = _as_stored(status)
    stored["containerStatuses"][0]["lastState"] = {"terminated": {"exitCode": 1}}
    assert not podstatus.agrees(stored, status), "container statuses are replaced whole"


def test_a_reason_left_on_a_true_condition_does_not_agree() -> None:
    status = _written()
    stored = _as_stored(status)
    ready = next(c for c in stored["conditions"] if c["type"] == "Ready")
    ready["reason"] = "ContainersNotReady"  # the patch's null removes it
    assert not podstatus.agrees(stored, status)


def test_fields_the_provider_does_not_own_are_left_alone() -> None:
    status = _written()
    stored = _as_stored(status)
    stored["conditions"].append({"type": "example.com/Gate", "status": "True"})
    stored["nominatedNodeName"] = "elsewhere"
    assert podstatus.agrees(copy.deepcopy(stored), status)


def test_reported_says_each_containers_state_and_a_failure() -> None:
    status = _written()
    assert podstatus.reported(status) == {"app": ("running", "vk://app", None)}
    failed = podstatus.compute(POD, _vm("failed", running=False, reason="HostLost"))
    assert podstatus.reported(failed)[""] == ("failed", None, "HostLost")
