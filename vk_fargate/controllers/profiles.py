"""Fargate profiles: from the CRD (and the provider's config file), kept current for
the admission webhook, with a finalizer that stops a deleted profile's pods first.

A new profile gets the finalizer and goes ``CREATING`` -> ``ACTIVE`` (or ``FAILED``
with a message when its spec is invalid). A deleted one goes ``DELETING``: its pods
(labelled ``eks.amazonaws.com/fargate-profile=<name>`` by the webhook) are deleted,
and once none is left the finalizer comes off and the profile is gone.
"""

from __future__ import annotations

import asyncio
import logging

import pydantic

from vk_fargate import errors
from vk_fargate.controllers import queueing
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.k8s import informers, kube, pods
from vk_fargate.k8s import profiles as k8s_profiles
from vk_fargate.scheduler import world

log = logging.getLogger(__name__)
RECHECK_SECONDS = 2.0  # while a deleted profile still has pods


class ProfileController:
    def __init__(
        self, api: kube.Kube, state: world.World, static: list[fargate_profiles.Profile]
    ) -> None:
        self.api = api
        self.world = state
        self.static = {p.name: p for p in static}
        self.dynamic: dict[str, fargate_profiles.Profile] = {}
        self.informer = informers.Informer(api, k8s_profiles.PATH, name="fargateprofiles")
        self.informer.subscribe(lambda _kind, obj: self.queue.add(obj["metadata"]["name"]))
        self.queue = queueing.Queue(self.reconcile, workers=2, name="profiles")

    def profiles(self) -> list[fargate_profiles.Profile]:
        """Every usable profile: the config file's, then the cluster's (by name)."""
        return [
            *self.static.values(),
            *(p for n, p in self.dynamic.items() if n not in self.static),
        ]

    def count(self) -> int:
        return len(self.informer.cache)

    async def reconcile(self, name: str) -> None:
        obj = self.informer.cache.get(f"/{name}")
        if obj is None:
            self.dynamic.pop(name, None)
            return
        meta = obj["metadata"]
        status = (obj.get("status") or {}).get("status")
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            self.dynamic.pop(name, None)
            await self._delete(obj, status, finalizers)
            return
        if k8s_profiles.FINALIZER not in finalizers:
            try:
                await k8s_profiles.set_finalizers(
                    self.api, obj, [*finalizers, k8s_profiles.FINALIZER]
                )
            except errors.KubeError as exc:
                if not exc.conflict:
                    raise  # a conflict: a newer version is on its way through the watch
            return  # the update comes back through the watch
        try:
            profile = fargate_profiles.Profile.model_validate({"name": name, **obj["spec"]})
        except pydantic.ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            self.dynamic.pop(name, None)
            if status != "FAILED":
                await k8s_profiles.set_status(self.api, name, "FAILED", problem)
            return
        if status is None:
            await k8s_profiles.set_status(self.api, name, "CREATING")
            return
        if status == "CREATING":
            await k8s_profiles.set_status(self.api, name, "ACTIVE")
            return
        self.dynamic[name] = profile.model_copy(update={"status": status})

    async def _delete(self, obj: kube.JSON, status: str | None, finalizers: list[str]) -> None:
        name = obj["metadata"]["name"]
        if status != "DELETING":
            await k8s_profiles.set_status(self.api, name, "DELETING")
        left = [
            pod
            for pod in self.world.pods.values()
            if (pod["metadata"].get("labels") or {}).get(fargate_profiles.PROFILE_LABEL) == name
        ]
        for pod in left:
            if not pod["metadata"].get("deletionTimestamp"):
                meta = pod["metadata"]
                try:
                    await self.api.delete(pods.path(meta["namespace"], meta["name"]))
                except errors.KubeError as exc:
                    if not exc.not_found:
                        raise
        if left:
            self.queue.later(name, RECHECK_SECONDS)
            return
        if k8s_profiles.FINALIZER in finalizers:
            rest = [f for f in finalizers if f != k8s_profiles.FINALIZER]
            await k8s_profiles.set_finalizers(self.api, obj, rest)

    async def run(self, leading: asyncio.Event) -> None:
        """Watch profiles (every replica answers the webhook); reconcile once leading."""
        watch = asyncio.get_running_loop().create_task(self.informer.run(), name="watch-profiles")
        try:
            await leading.wait()
            self.queue.start()
            await watch
        finally:
            watch.cancel()
            await self.queue.stop()
