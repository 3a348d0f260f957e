"""Leader election on a real Lease: one leader, a standby takes over when it stops, clock
skew between replicas changes nothing, and a leader that cannot renew steps down before
anyone may take over."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from vk_fargate.k8s import kube, leaderelection

pytestmark = pytest.mark.e2e
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
# Seconds before a wait counts as hung. Order and outcome are asserted, never speed:
# a loaded CI machine may take many lease periods for what takes one here.
HANG = 60


def elector(api: kube.Kube, name: str, identity: str, **timings: float) -> leaderelection.Elector:
    timings = {"duration": 3, "renew_deadline": 2, "retry": 0.5, **timings}
    return leaderelection.Elector(api, namespace="default", name=name, identity=identity, **timings)


async def test_one_leader_and_takeover_after_expiry(api: k8s.ApiClient) -> None:
    raw = kube.Kube(api)
    a, b = elector(raw, "le-test", "a"), elector(raw, "le-test", "b")
    task_a = asyncio.create_task(a.run(), name="elector-a")
    await asyncio.wait_for(a.leading.wait(), HANG)
    task_b = asyncio.create_task(b.run(), name="elector-b")
    await asyncio.sleep(4)  # longer than the lease: a renews it, so b must not take it
    assert not b.leading.is_set(), "a live leader keeps its lease"
    task_a.cancel()  # the leader dies without releasing: b waits out the lease
    await asyncio.wait_for(b.leading.wait(), HANG)
    lease = await k8s.CoordinationV1Api(api).read_namespaced_lease("le-test", "default")
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1
    # A graceful stop hands over at once.
    c = elector(raw, "le-test", "c", duration=30, renew_deadline=20)
    task_c = asyncio.create_task(c.run(), name="elector-c")
    task_b.cancel()
    await b.release()

    async def c_leads() -> bool:
        return c.leading.is_set()

    await waiting.until(c_leads, timeout=HANG, what="c to take the released lease")
    task_c.cancel()
    await k8s.CoordinationV1Api(api).delete_namespaced_lease("le-test", "default")


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_holder_with_a_skewed_clock_is_judged_by_change_not_by_its_timestamps(
    api: k8s.ApiClient,
) -> None:
    """The holder's clock is an hour behind (its renewTime looks long expired) and then an
    hour ahead (it looks valid long after it died): the candidate goes by whether the
    Lease changes, as client-go does."""
    raw = kube.Kube(api)
    name = f"le-skew-{uuid.uuid4().hex[:6]}"
    skew = datetime.timedelta(hours=1)
    now = datetime.datetime.now(datetime.UTC)
    await raw.create(
        LEASES,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {
                "holderIdentity": "skewed",
                "leaseDurationSeconds": 3,
                "renewTime": _stamp(now - skew),
            },
        },
    )

    async def renew_as_skewed(offset: datetime.timedelta, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            lease: dict[str, Any] = await raw.get(f"{LEASES}/{name}")
            holder = lease["spec"]["holderIdentity"]
            assert holder == "skewed", f"{holder} took the Lease of a live, skewed holder"
            lease["spec"]["renewTime"] = _stamp(datetime.datetime.now(datetime.UTC) + offset)
            await raw.request("PUT", f"{LEASES}/{name}", body=lease)
            await asyncio.sleep(0.5)

    candidate = elector(raw, name, "candidate")
    task = asyncio.create_task(candidate.run(), name="elector-candidate")
    try:
        await renew_as_skewed(-skew, 5)  # alive, an hour behind
        await renew_as_skewed(skew, 2)  # alive, an hour ahead; then it dies
        await asyncio.wait_for(candidate.leading.wait(), HANG)
        lease = await raw.get(f"{LEASES}/{name}")
        assert lease["spec"]["holderIdentity"] == "candidate"
    finally:
        task.cancel()
        await raw.request("DELETE", f"{LEASES}/{name}")


class Partitioned(kube.Kube):
    """The API server, until ``cut`` is set: then every request fails as a partition."""

    cut = False

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self.cut:
            raise ConnectionRefusedError(f"{method} {path}: partitioned from the API server")
        return await super().request(method, path, **kwargs)


async def test_a_leader_that_cannot_renew_steps_down_before_anyone_takes_over(
    api: k8s.ApiClient,
) -> None:
    name = f"le-cut-{uuid.uuid4().hex[:6]}"
    cut_off = Partitioned(api)
    a, b = elector(cut_off, name, "a"), elector(kube.Kube(api), name, "b")
    task_a = asyncio.create_task(a.run(), name="elector-a")
    await asyncio.wait_for(a.leading.wait(), HANG)
    task_b = asyncio.create_task(b.run(), name="elector-b")
    await asyncio.sleep(1)
    cut_off.cut = True
    order: list[str] = []

    async def note(event: asyncio.Event, who: str) -> None:
        await event.wait()
        order.append(who)

    watchers = [
        asyncio.create_task(note(a.lost, "a stepped down"), name="a-lost"),
        asyncio.create_task(note(b.leading, "b leads"), name="b-leads"),
    ]
    await asyncio.wait_for(asyncio.gather(*watchers), HANG)
    assert order == ["a stepped down", "b leads"]
    assert task_a.done() and not task_a.cancelled() and task_a.exception() is None
    task_b.cancel()
    await kube.Kube(api).request("DELETE", f"{LEASES}/{name}")
