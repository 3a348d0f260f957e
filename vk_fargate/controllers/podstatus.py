"""A pod's status, computed from its microVM. Pure.

Kubelet's rules: Pending until the sandbox runs and init containers are done;
a container is ready as its readiness probe says (the fleet's ``ready``), and the
pod's ``ContainersReady`` and ``Ready`` follow from its containers';
Running while any container runs or is restarting; Succeeded or Failed once all have
stopped for good. Conditions, container statuses and IPs follow from the same
microVM record, so the pod says what the fleet says and nothing else.
"""

from __future__ import annotations

import datetime
from typing import Any

from vk_fargate.fargate import podupdate
from vk_fargate.fleet import models

JSON = dict[str, Any]


def timestamp(moment: datetime.datetime | None) -> str | None:
    """Kubernetes' RFC 3339 with second precision."""
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(c: models.ContainerStatus) -> JSON:
    if c.state == "running":
        return {"running": {"startedAt": timestamp(c.started_at)}}
    if c.state == "terminated":
        terminated: JSON = {
            "exitCode": c.exit_code if c.exit_code is not None else 0,
            "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
            "startedAt": timestamp(c.started_at),
            "finishedAt": timestamp(c.finished_at),
            "containerID": c.container_id,
        }
        if c.message:
            terminated["message"] = c.message
        return {"terminated": {k: v for k, v in terminated.items() if v is not None}}
    waiting: JSON = {"reason": c.reason or "ContainerCreating"}
    if c.message:
        waiting["message"] = c.message
    return {"waiting": waiting}


def _last_state(c: models.ContainerStatus) -> JSON:
    last = c.last_termination
    if last is None:
        return {}
    return {
        "terminated": {
            k: v
            for k, v in {
                "exitCode": last.exit_code,
                "reason": last.reason or ("Completed" if last.exit_code == 0 else "Error"),
                "message": last.message or None,
                "startedAt": timestamp(last.started_at),
                "finishedAt": timestamp(last.finished_at),
            }.items()
            if v is not None
        }
    }


def _statuses(
    spec_containers: list[JSON],
    reported: list[models.ContainerStatus],
    *,
    init: bool,
    resources: dict[str, JSON] | None,
) -> list[JSON]:
    sidecars = {c["name"] for c in spec_containers if init and c.get("restartPolicy") == "Always"}
    by_name = {c.name: c for c in reported}
    out = []
    for container in spec_containers:
        name = container["name"]
        c = by_name.get(name) or models.ContainerStatus(name=name, state="waiting", restart_count=0)
        # An init container is ready once it succeeded; app containers and sidecars as
        # the fleet says (running, started, and their readiness probe passing).
        if init and name not in sidecars:
            ready = c.state == "terminated" and c.exit_code == 0
        else:
            ready = c.state == "running" and c.ready
        started = c.state == "running" and c.started is not False
        status: JSON = {
            "name": name,
            "image": container.get("image", ""),
            "imageID": c.image_id or "",
            "ready": ready,
            "started": started,
            "restartCount": c.restart_count,
            "state": _state(c),
            "lastState": _last_state(c),
        }
        if c.container_id:
            status["containerID"] = c.container_id
        if resources is not None and name in resources:
            status["resources"] = resources[name]
        out.append(status)
    return out


def _phase(vm: models.MicroVM, init_done: bool, sidecars: set[str]) -> str:
    state = vm.status.state
    if state == "failed":
        return "Failed"
    if state == "stopped":
        codes = [c.exit_code for c in vm.status.containers if c.name not in sidecars]
        ok = vm.status.reason != "InitError" and codes and all(code == 0 for code in codes)
        return "Succeeded" if ok else "Failed"
    if state in ("pending", "provisioning") or not init_done:
        return "Pending"
    # As the kubelet: Pending while no container has started yet (its image being
    # pulled, runc making it), Running once one runs or has run.
    if all(
        c.state == "waiting" and c.restart_count == 0 and c.last_termination is None
        for c in vm.status.containers
    ):
        return "Pending"
    return "Running"


def _condition(kind: str, ok: bool, reason: str | None = None) -> JSON:
    condition: JSON = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
    if reason and not ok:
        condition["reason"] = reason
    elif ok:  # null: the strategic-merge patch removes a reason left from False
        condition.update(reason=None, message=None)
    return condition


def _gates_not_ready(spec: JSON, previous: list[JSON]) -> str | None:
    """Why the pod's readiness gates hold it back (the kubelet's words), or None: each
    gate's condition, set by whoever owns it, must be there and True."""
    have = {c.get("type"): c.get("status") for c in previous}
    for gate in spec.get("readinessGates") or []:
        kind = gate.get("conditionType")
        if kind not in have:
            return f'corresponding condition of pod readiness gate "{kind}" does not exist.'
        if have[kind] != "True":
            return f'the status of pod readiness gate "{kind}" is not "True", but {have[kind]}'
    return None


def _ready(containers_ready: bool, gates: str | None) -> JSON:
    """The pod's Ready: its containers ready and its readiness gates True."""
    if not containers_ready:
        return _condition("Ready", False, "ContainersNotReady")
    if gates is not None:
        return {**_condition("Ready", False, "ReadinessGatesNotReady"), "message": gates}
    return _condition("Ready", True)


def _stamped(conditions: list[JSON], previous: list[JSON], now: str | None) -> list[JSON]:
    """Each condition's lastTransitionTime: kept while its status is unchanged, else
    ``now``, when the API server learns of the change (as the kubelet stamps it)."""
    before = {c.get("type"): c for c in previous}
    for condition in conditions:
        old = before.get(condition["type"]) or {}
        same = old.get("status") == condition["status"] and old.get("lastTransitionTime")
        condition["lastTransitionTime"] = old["lastTransitionTime"] if same else now
    return conditions


def compute(
    pod: JSON,
    vm: models.MicroVM,
    *,
    previous: list[JSON] | None = None,
    now: datetime.datetime | None = None,
    resize_pending: str | None = None,
    failed: tuple[str, str] | None = None,
    resources: dict[str, JSON] | None = None,
) -> JSON:
    """The ``status`` fields the provider owns, for a strategic-merge patch written at
    ``now``; ``previous`` are the conditions the API server has (or was last sent).
    ``resize_pending``: why the pod's resize cannot be made (``PodResizePending``,
    ``Infeasible``; removed again once it is None). ``failed``: the reason and message
    of a pod the provider failed itself (its deadline), whatever its microVM does.
    ``resources``: each container's ``resources`` to report (``podupdate.allocated``)."""
    spec = pod.get("spec") or {}
    init_specs = spec.get("initContainers") or []
    # The fleet reports sidecars among its init containers (fargate.microvms.spec), or,
    # for microVMs made before it ran them so, among its app containers.
    sidecars = {c["name"] for c in init_specs if c.get("restartPolicy") == "Always"}
    reported = [
        *vm.status.init_containers,
        *(c for c in vm.status.containers if c.name in sidecars),
    ]
    init = _statuses(init_specs, reported, init=True, resources=resources)
    main = _statuses(
        spec.get("containers") or [], vm.status.containers, init=False, resources=resources
    )
    # As the kubelet (HasAnyRegularContainerStarted): once an app container has run,
    # the pod stays initialized while a sidecar restarts.
    app_started = any(
        c.state != "waiting" or c.last_termination is not None
        for c in vm.status.containers
        if c.name not in sidecars
    )
    init_done = app_started or all(
        s["ready"] or ((spec_c.get("restartPolicy") == "Always") and s["started"])
        for s, spec_c in zip(init, init_specs, strict=True)
    )
    phase = "Failed" if failed else _phase(vm, init_done, sidecars)
    # As the kubelet's ContainersReady: app containers and sidecars, all ready.
    running_sidecars = [s for s in init if s["name"] in sidecars]
    ready = phase == "Running" and all(s["ready"] for s in [*running_sidecars, *main])
    sandbox_up = vm.status.state in ("running", "stopping")
    conditions = [
        _condition("PodReadyToStartContainers", sandbox_up),
        _condition("Initialized", init_done, "ContainersNotInitialized"),
        _condition("ContainersReady", ready, "ContainersNotReady"),
        _ready(ready, _gates_not_ready(spec, previous or [])),
        _condition("PodScheduled", True),
    ]
    if resize_pending:
        conditions.append(
            {
                "type": podupdate.RESIZE_CONDITION,
                "status": "True",
                "reason": podupdate.RESIZE_REASON,
                "message": resize_pending,
                "lastProbeTime": None,
            }
        )
    written = timestamp(now or models.now())
    stamped = _stamped(conditions, previous or [], written)
    if not resize_pending and any(
        c.get("type") == podupdate.RESIZE_CONDITION and c.get("status") for c in previous or []
    ):  # the resize was taken back: the condition goes (strategic merge by type)
        stamped.append({"type": podupdate.RESIZE_CONDITION, "$patch": "delete"})
    status: JSON = {
        "phase": phase,
        "conditions": stamped,
        "containerStatuses": main,
        "startTime": timestamp(vm.status.created_at),
    }
    if init:
        status["initContainerStatuses"] = init
    if spec.get("ephemeralContainers"):
        status["ephemeralContainerStatuses"] = ephemeral(spec)
    if vm.status.private_ip:
        ips = [{"ip": vm.status.private_ip}]
        status.update(
            podIP=vm.status.private_ip, podIPs=ips, hostIP=vm.status.private_ip, hostIPs=ips
        )
    if failed:
        status["reason"], status["message"] = failed
    elif vm.status.state == "failed":
        status["reason"] = vm.status.reason or "ProviderFailed"
        status["message"] = vm.status.message or "the microVM failed"
    return status


# ``kubectl debug``'s ephemeral containers would join a running microVM, whose containers
# are fixed when it starts: each is reported as a container that could not start (which
# ends ``kubectl debug``'s wait at once), and a warning event says why.
EPHEMERAL_REFUSAL = (
    "ephemeral containers are not run by vk-fargate: a Fargate microVM's containers are "
    "fixed when it starts; use kubectl exec into one of them, or kubectl debug --copy-to"
)


def ephemeral(spec: JSON) -> list[JSON]:
    """The statuses of the pod's ephemeral containers: each refused, for good."""
    refused = {"exitCode": 128, "reason": "StartError", "message": EPHEMERAL_REFUSAL}
    return [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"terminated": refused},
        }
        for c in spec.get("ephemeralContainers") or []
    ]


# The lists of a pod's status that a strategic-merge patch merges by key; the others
# (container statuses) it replaces whole.
MERGE_KEYS = {"conditions": "type", "podIPs": "ip", "hostIPs": "ip"}


def _clean(value: Any) -> Any:
    """``value`` without its null fields (absent and null read the same)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _merged(current: Any, patch: Any, merge_key: str | None = None) -> Any:
    """``current`` after a strategic-merge ``patch``, as the API server applies one."""
    if isinstance(patch, dict) and isinstance(current, dict):
        out = dict(current)
        for name, value in patch.items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = _merged(current.get(name), value, MERGE_KEYS.get(name))
        return out
    if isinstance(patch, list) and isinstance(current, list) and merge_key:
        out_list = list(current)
        at = {item.get(merge_key): n for n, item in enumerate(out_list) if isinstance(item, dict)}
        for item in patch:
            n = at.get(item.get(merge_key))
            if n is None:
                out_list.append(_clean(item))
            else:
                out_list[n] = _merged(out_list[n], item)
        return out_list
    return _clean(patch)


def agrees(current: JSON, wanted: JSON) -> bool:
    """Whether the pod's status ``current`` already says what the patch ``wanted`` would
    write: then nothing need be sent. The pod's status is the one truth (no copy of
    what was sent last), so a status someone else changed is written again."""
    return bool(_clean(_merged(current, wanted)) == _clean(current))


def reported(status: JSON) -> dict[str, tuple[str, str | None, str | None]]:
    """What a pod's status says of each container, for events: (state, container ID,
    reason) by container name, and the pod's failure under ``""``. The events for a
    change are sent as the status that says it is written, so a status already saying
    it (written by this process or an earlier one) sends none (nor does a kubelet)."""
    out: dict[str, tuple[str, str | None, str | None]] = {}
    for c in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        for kind, detail in (c.get("state") or {}).items():
            out[c["name"]] = (kind, c.get("containerID"), (detail or {}).get("reason"))
    if status.get("phase") == "Failed" and status.get("reason"):
        out[""] = ("failed", None, status["reason"])
    return out
