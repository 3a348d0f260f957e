"""UpdatePod at the backend seam: a running pod's spec changed through the real API
server, the real reconcilers acting on it, the in-memory fleet keeping the fleet API's
contract for updates (only images change in place; anything else is a Conflict).

As the kubelet: a changed image restarts its container with it (Killing "definition
changed", restartCount + 1, a new container ID); a passed ``activeDeadlineSeconds``
fails the pod (DeadlineExceeded) and kills its containers; a resize to another Fargate
size is refused (PodResizePending, Infeasible, a warning), and taken back it clears."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest as provider_conftest
from tests.scenario import fakebackend, test_races
from vk_fargate import app
from vk_fargate.k8s import kube

pytestmark = pytest.mark.e2e
JSON = dict[str, Any]


async def events_of(api: k8s.ApiClient, ns: str, uid: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the events on pod ``uid``, once per time it was said
    (the recorder counts repeats as the kubelet's does)."""
    listed = await k8s.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.uid={uid}"
    )
    return [(e.type, e.reason, e.message) for e in listed.items for _ in range(e.count or 1)]


async def test_a_changed_image_restarts_its_container_with_it(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "update")
    settings = {"metadata": {"name": "settings"}, "data": {"greeting": "hello"}}
    await core.create_namespaced_config_map(ns, settings)
    pod = test_races.sleeper("web")
    ref = {"configMapKeyRef": {"name": "settings", "key": "greeting"}}
    pod["spec"]["containers"][0]["env"] = [{"name": "GREETING", "valueFrom": ref}]
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    before = (await test_races.running(api, ns, "web")).status.container_statuses[0]
    # The environment was resolved at start: a change since is no change of the spec
    # the fleet runs (only images change in place).
    await core.patch_namespaced_config_map("settings", ns, {"data": {"greeting": "bye"}})
    patch = {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}
    await core.patch_namespaced_pod("web", ns, patch)

    async def restarted() -> Any:
        pod = await core.read_namespaced_pod("web", ns)
        status = pod.status.container_statuses[0]
        return status if status.restart_count == 1 and status.state.running else None

    after = await waiting.until(restarted, timeout=30, what="the container to restart")
    assert after.container_id != before.container_id
    assert after.image == "busybox:2"
    assert [c.image for c in fake.vms[uid].spec.containers] == ["busybox:2"]
    env = {e.name: e.value for e in fake.vms[uid].spec.containers[0].env}
    assert env["GREETING"] == "hello"
    assert [[c.image for c in s.containers] for s in fake.updates[-1:]] == [["busybox:2"]]

    async def said() -> list[tuple[str, str, str]]:
        seen = await events_of(api, ns, uid)
        killing = ("Normal", "Killing", "Container main definition changed, will be restarted")
        started = [e for e in seen if e[1] == "Started"]
        return seen if killing in seen and len(started) == 2 else []

    seen = await waiting.until(said, timeout=30, what="Killing, then Started again")
    # The cluster has no kube-dns: the kubelet's MissingClusterDNS is expected.
    expected = ("LoggingDisabled", "MissingClusterDNS")
    assert not [e for e in seen if e[0] == "Warning" and e[1] not in expected], seen
    assert (await core.read_namespaced_pod("web", ns)).status.phase == "Running"
    await core.delete_namespace(ns)


async def test_a_passed_active_deadline_fails_the_pod_and_kills_it(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "deadline")
    uid = (await core.create_namespaced_pod(ns, test_races.sleeper("late"))).metadata.uid
    await test_races.running(api, ns, "late")
    await core.patch_namespaced_pod("late", ns, {"spec": {"activeDeadlineSeconds": 2}})

    async def failed() -> Any:
        pod = await core.read_namespaced_pod("late", ns)
        return pod if pod.status.phase == "Failed" else None

    pod = await waiting.until(failed, timeout=30, what="the pod to fail at its deadline")
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.message == "Pod was active on the node longer than the specified deadline"
    await waiting.until(
        lambda: test_races._async(uid not in fake.vms), what="its microVM to be stopped"
    )
    seen = await events_of(api, ns, uid)
    assert ("Normal", "DeadlineExceeded", pod.status.message) in seen, seen
    # Its microVM gone, the pod stays Failed for its deadline, not for a lost microVM.
    pod = await core.read_namespaced_pod("late", ns)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    await core.delete_namespace(ns)


async def test_a_resize_to_another_fargate_size_is_refused_until_taken_back(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "resize")
    pod = test_races.sleeper("sized")
    small = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    pod["spec"]["containers"][0]["resources"] = small
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    await test_races.running(api, ns, "sized")
    door = kube.Kube(api)
    resize = f"/api/v1/namespaces/{ns}/pods/sized/resize"

    async def resized(memory: str) -> None:
        requests = {"cpu": "100m", "memory": memory}
        body = {"spec": {"containers": [{"name": "main", "resources": {"requests": requests}}]}}
        await door.patch(resize, body)

    async def pending() -> list[Any]:
        conditions = (await core.read_namespaced_pod("sized", ns)).status.conditions or []
        return [c for c in conditions if c.type == "PodResizePending"]

    # Within the node's allocatable (the API server checks that, and refuses more) but
    # past what 0.5GB holds beside Fargate's 256 MiB overhead: 1GB, another size.
    await resized("400Mi")
    condition = (await waiting.until(pending, timeout=30, what="PodResizePending"))[0]
    assert (condition.status, condition.reason) == ("True", "Infeasible")
    assert "0.25vCPU 0.5GB" in condition.message and "0.25vCPU 1GB" in condition.message
    main = (await core.read_namespaced_pod("sized", ns)).status.container_statuses[0]
    assert main.resources.requests == {"cpu": "100m", "memory": "64Mi"}, "what it has"
    warnings = [e for e in await events_of(api, ns, uid) if e[1] == "ResizeInfeasible"]
    assert warnings and warnings[0][0] == "Warning", warnings
    assert fake.vms[uid].spec.mem_mib == 512, "a microVM keeps its launch size"
    assert ("update", uid) not in fake.calls

    await resized("200Mi")  # within the size it was given: nothing pending, and done

    async def cleared() -> bool:
        return not await pending()

    await waiting.until(cleared, timeout=30, what="PodResizePending to go")
    done = await core.read_namespaced_pod("sized", ns)
    assert done.status.phase == "Running"
    assert done.status.container_statuses[0].resources.requests["memory"] == "200Mi"
    await core.delete_namespace(ns)
