"""Leader election on a real Lease: one leader, a standby takes over when it stops."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from vk_fargate.k8s import kube, leaderelection

pytestmark = pytest.mark.e2e


async def test_one_leader_and_takeover_after_expiry(api: k8s.ApiClient) -> None:
    raw = kube.Kube(api)
    a = leaderelection.Elector(
        raw, namespace="default", name="le-test", identity="a", duration=3, renew=0.5
    )
    b = leaderelection.Elector(
        raw, namespace="default", name="le-test", identity="b", duration=3, renew=0.5
    )
    task_a = asyncio.create_task(a.run(), name="elector-a")
    await asyncio.wait_for(a.leading.wait(), 10)
    task_b = asyncio.create_task(b.run(), name="elector-b")
    await asyncio.sleep(2)
    assert not b.leading.is_set(), "a live leader keeps its lease"
    task_a.cancel()  # the leader dies without releasing: b waits out the lease
    await asyncio.wait_for(b.leading.wait(), 15)
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease("le-test", "default")
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1
    # A graceful stop hands over at once.
    c = leaderelection.Elector(
        raw, namespace="default", name="le-test", identity="c", duration=30, renew=0.5
    )
    task_c = asyncio.create_task(c.run(), name="elector-c")
    task_b.cancel()
    await b.release()

    async def c_leads() -> bool:
        return c.leading.is_set()

    await waiting.until(c_leads, timeout=10, what="c to take the released lease")
    task_c.cancel()
    await k8s.CoordinationV1Api(api).delete_namespaced_lease("le-test", "default")
