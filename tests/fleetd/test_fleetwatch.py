"""The provider's follower of the fleet (``controllers/fleetwatch.py``) against a real
fleetd: a list enqueues the pods still waiting for a microVM, so their placement does
not wait out a back-off that grew while the fleet was away."""

from __future__ import annotations

import asyncio

from tests import waiting
from vk_fargate import world
from vk_fargate.controllers import fleetwatch
from vk_fargate.fleet import client as fleet_api


def _pod(uid: str, node: str | None = None) -> dict[str, object]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"uid": uid, "namespace": "watch", "name": uid}, "spec": spec}


async def test_a_list_enqueues_the_pods_still_to_place(
    fleet_client: fleet_api.FleetClient,
) -> None:
    state = world.World()
    state.pod_cache.store(_pod("waiting"))
    state.pod_cache.store(_pod("placed", node="fargate-ip-10-0-0-9.eu-central-1.compute.internal"))
    enqueued: list[str] = []
    follow = asyncio.create_task(
        fleetwatch.run(fleet_client, state, enqueued.append, cluster="fleetwatch-test"),
        name="follow-fleet",
    )
    try:

        async def listed() -> bool:
            return state.fleet_synced.is_set()

        await waiting.until(listed, what="the first list")
        assert "waiting" in enqueued
        assert "placed" not in enqueued, "a bound pod's state comes from its microVM's events"
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
