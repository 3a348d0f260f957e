"""What vk-fargate cannot honour is said: a pod field it runs without is a
``PodFieldsNotApplied`` warning on a pod that runs; one the pod cannot run without
keeps it Pending with ``FailedScheduling`` naming it."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest as provider_conftest
from tests.scenario import test_races, test_updates
from vk_fargate import app

pytestmark = pytest.mark.e2e


async def test_fields_not_applied_are_warned_about_and_refused_ones_keep_the_pod_pending(
    api: k8s.ApiClient, provider: app.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "support")
    aliased = test_races.sleeper("aliased", shareProcessNamespace=True)
    uid = (await core.create_namespaced_pod(ns, aliased)).metadata.uid
    windows = test_races.sleeper("windows", os={"name": "windows"})
    refused_uid = (await core.create_namespaced_pod(ns, windows)).metadata.uid
    await test_races.running(api, ns, "aliased")

    async def said(pod_uid: str, reason: str) -> str | None:
        found = [m for _, r, m in await test_updates.events_of(api, ns, pod_uid) if r == reason]
        return found[0] if found else None

    warning = await waiting.until(lambda: said(uid, "PodFieldsNotApplied"), what="the warning")
    assert warning.startswith("vk-fargate does not apply these pod fields yet; the pod runs")
    assert "shareProcessNamespace (each container has its own PID namespace)" in warning
    refusal = await waiting.until(lambda: said(refused_uid, "FailedScheduling"), what="refusal")
    assert refusal == (
        "Pod not supported on Fargate: fields not supported: os.name windows "
        "(Fargate runs Linux only)"
    )
    assert (await core.read_namespaced_pod("windows", ns)).spec.node_name is None
    await core.delete_namespace(ns)
