"""Pods created while the webhook did not answer, found and created again for Fargate.

A watch on unbound pods of other schedulers (few, in any cluster) feeds a queue; each
pod that a profile should have taken (``fargate/unrouted.py`` says which, and how) is
deleted only as it was seen (its UID and resourceVersion, so a pod another scheduler
binds meanwhile is kept) and made again through the webhook: by its controller, or,
for a bare pod, by this controller. Each step leaves an event saying what happened.

A bare pod exists nowhere between its deletion and its re-creation; the replacement is
kept here and retried until created, so only a provider crash in that moment (two API
calls) could lose it. The leader alone acts; the watch runs on every replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vk_fargate import errors
from vk_fargate.controllers import queueing
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fargate import unrouted
from vk_fargate.k8s import events, informers, kube, pods

log = logging.getLogger(__name__)
REASON = "RecreatedForFargate"
COMPONENT = "fargate-scheduler"


class Unrouted:
    def __init__(
        self,
        api: kube.Kube,
        recorder: events.Recorder,
        profiles: Callable[[], list[fargate_profiles.Profile]],
        created: Callable[[str], str | None],
        *,
        scheduler: str,
        excluded_namespaces: list[str],
    ) -> None:
        self.api = api
        self.recorder = recorder
        self.profiles = profiles
        self.created = created
        self.scheduler = scheduler
        self.excluded = set(excluded_namespaces)
        self.informer = informers.Informer(
            api,
            "/api/v1/pods",
            name="unrouted-pods",
            field_selector=f"spec.nodeName=,spec.schedulerName!={scheduler}",
        )
        self.informer.subscribe(lambda _kind, pod: self.queue.add(informers.key(pod)))
        self.queue = queueing.Queue(self.reconcile, workers=1, name="unrouted-pods")
        self.replacing: dict[str, kube.JSON] = {}  # bare pods deleted, to create again

    async def run(self, leading: asyncio.Event, profiles_synced: asyncio.Event) -> None:
        """Watch unbound pods; act once leading and the profiles are known."""
        watch = asyncio.get_running_loop().create_task(self.informer.run(), name="watch-unrouted")
        try:
            await leading.wait()
            await profiles_synced.wait()
            self.queue.start()
            await watch
        finally:
            watch.cancel()
            await self.queue.stop()

    async def reconcile(self, key: str) -> None:
        if key in self.replacing:
            await self._create(key)
            return
        pod = self.informer.cache.get(key)
        if pod is None or pod["metadata"].get("namespace") in self.excluded:
            return
        profile = unrouted.missed(pod, self.profiles(), self.created)
        if profile is None:
            return
        owner = unrouted.controller(pod)
        if owner is not None:
            if await pods.delete_unchanged(self.api, pod):
                log.info("deleted %s for its %s to recreate for Fargate", key, owner.get("kind"))
                await self._record_on_owner(pod, owner, profile)
            return
        self.replacing[key] = unrouted.replacement(pod, profile, self.scheduler)
        if not await pods.delete_unchanged(self.api, pod):
            del self.replacing[key]  # bound, changed or deleted meanwhile: not ours to redo
            return
        await self.recorder.record(
            pod,
            REASON,
            f"{unrouted.why(pod, profile)}; deleted to be recreated for {self.scheduler}",
            warning=True,
            component=COMPONENT,
        )
        await self._create(key)

    async def _create(self, key: str) -> None:
        """Create the replacement of bare pod ``key``; a failure is retried (the queue)."""
        manifest = self.replacing[key]
        try:
            created = await pods.create(self.api, manifest)
        except errors.KubeError as exc:
            if exc.conflict:  # the old pod still has finalizers to run: wait for it
                raise errors.VkFargateError(f"{key} still exists; its replacement waits") from exc
            raise
        del self.replacing[key]
        replaced = manifest["metadata"]["annotations"][unrouted.REPLACES_ANNOTATION]
        log.info("recreated %s for %s (it replaces pod %s)", key, self.scheduler, replaced)
        await self.recorder.record(
            created,
            REASON,
            f"this pod replaces pod {replaced} of the same name, which was created while the "
            f"Fargate admission webhook did not answer; it is the same pod, for {self.scheduler}",
            warning=True,
            component=COMPONENT,
        )

    async def _record_on_owner(
        self, pod: kube.JSON, owner: kube.JSON, profile: fargate_profiles.Profile
    ) -> None:
        kind = owner.get("kind", "controller")
        message = f"{unrouted.why(pod, profile)}; deleted it so that this {kind} creates it again"
        involved = {
            "apiVersion": owner.get("apiVersion"),
            "kind": kind,
            "metadata": {
                "name": owner.get("name"),
                "namespace": pod["metadata"]["namespace"],
                "uid": owner.get("uid"),
            },
        }
        await self.recorder.record(involved, REASON, message, warning=True, component=COMPONENT)
