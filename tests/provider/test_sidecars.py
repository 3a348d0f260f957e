"""A native sidecar through the real stack (provider, fleetd, runc): reported in
``initContainerStatuses``, Running again with its restart counted after it exited,
though the pod's restartPolicy is Never; the pod Succeeded once its job finished."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest

pytestmark = pytest.mark.e2e

WORK = [{"name": "work", "mountPath": "/work"}]
# Counts its instances in /work/n: the first exits 1 after a second, the next run on
# until TERM.
SIDECAR = """
n=$(( $(cat /work/n 2>/dev/null || echo 0) + 1 )); echo $n > /work/n
if [ $n = 1 ]; then sleep 1; exit 1; fi
trap 'exit 0' TERM
while :; do sleep 0.2; done
"""
# Runs until the sidecar's second instance, then 5 s more, and succeeds.
JOB = 'until [ "$(cat /work/n)" = 2 ]; do sleep 0.2; done; sleep 5; echo done'


async def test_a_sidecar_is_restarted_and_the_pod_succeeds_when_its_job_finishes(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "sidecars")
    job = {"name": "job", "image": "busybox", "command": ["sh", "-c", JOB], "volumeMounts": WORK}
    logs = {
        "name": "logs",
        "image": "busybox",
        "command": ["sh", "-c", SIDECAR],
        "restartPolicy": "Always",
        "volumeMounts": WORK,
    }
    pod = conftest.pod(
        "with-sidecar",
        job,
        restartPolicy="Never",
        initContainers=[logs],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    await core.create_namespaced_pod(ns, pod)

    async def restarted() -> k8s.V1Pod | None:
        found = await core.read_namespaced_pod("with-sidecar", ns)
        statuses = found.status.init_container_statuses or []
        ok = (
            found.status.phase == "Running"
            and statuses
            and statuses[0].restart_count >= 1
            and statuses[0].state.running is not None
        )
        return found if ok else None

    found = await waiting.until(restarted, timeout=90, what="the sidecar running again")
    (sidecar,) = found.status.init_container_statuses
    assert sidecar.name == "logs" and sidecar.started is True and sidecar.ready is True
    assert sidecar.restart_count == 1
    assert sidecar.last_state.terminated is not None
    assert sidecar.last_state.terminated.exit_code == 1
    assert found.status.container_statuses[0].state.running is not None

    async def succeeded() -> k8s.V1Pod | None:
        found = await core.read_namespaced_pod("with-sidecar", ns)
        return found if found.status.phase in ("Succeeded", "Failed") else None

    found = await waiting.until(succeeded, timeout=60, what="the pod ended")
    assert found.status.phase == "Succeeded"
    terminated = found.status.container_statuses[0].state.terminated
    assert terminated is not None and terminated.exit_code == 0
    (sidecar,) = found.status.init_container_statuses
    assert sidecar.state.terminated is not None  # stopped after the job
    await core.delete_namespace(ns)
