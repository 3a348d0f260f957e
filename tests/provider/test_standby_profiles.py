"""Every replica's webhook answers with the cluster's profiles, not only the leader's:
the API server calls whichever replica its Service picks."""

from __future__ import annotations

import asyncio

import pytest

from tests import waiting
from tests.provider import conftest
from vk_fargate import world
from vk_fargate.controllers import profiles
from vk_fargate.devcluster import cluster
from vk_fargate.k8s import client, kube
from vk_fargate.k8s import profiles as k8s_profiles

pytestmark = pytest.mark.e2e


async def test_a_standby_replica_knows_the_profiles_the_leader_made_active(
    provider: conftest.Provider, local_cluster: cluster.Cluster
) -> None:
    api = kube.Kube(await client.connect(local_cluster.kubeconfig))
    standby = profiles.ProfileController(api, world.World(), [])
    never = asyncio.Event()  # this replica never leads
    task = asyncio.create_task(standby.run(never), name="standby-profiles")
    name = "standby-seen"
    try:
        await k8s_profiles.create(api, name, {"selectors": [{"namespace": "standby-*"}]})

        async def active() -> bool:
            return any(p.name == name and p.status == "ACTIVE" for p in standby.profiles())

        await waiting.until(active, what="the standby to see the profile ACTIVE")
        await k8s_profiles.delete(api, name)

        async def gone() -> bool:
            return all(p.name != name for p in standby.profiles())

        await waiting.until(gone, what="the standby to drop the deleted profile")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
