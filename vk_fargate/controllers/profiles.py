"""Fargate profiles: from the CRD (and the provider's config file), kept current for
the admission webhook, with a finalizer that stops a deleted profile's pods first.

A new profile gets the finalizer and goes ``CREATING`` -> ``ACTIVE`` (or ``FAILED``
with a message when its spec is invalid). With an AWS backend, a profile is checked
against AWS when it is created and once per provider start: missing or public subnets
or an unusable pod execution role make it ``FAILED`` with a message naming the culprit
(it still selects its pods, which fargate-scheduler then refuses with EKS's
``Misconfigured Fargate Profile`` text, so they never fall through to another
scheduler); a VPC without DNS support sets the ``VpcDnsReady`` condition False and
records a warning event, and is asked about again every ``dns_recheck_seconds`` until
it is fixed (fargate-scheduler keeps CoreDNS's pods Pending meanwhile, as EKS does).
AWS being unreachable changes nothing and is retried.

A deleted profile goes ``DELETING``: its pods (labelled
``eks.amazonaws.com/fargate-profile=<name>`` by the webhook) are deleted, and once none
is left the finalizer comes off and the profile is gone.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from vk_fargate import errors, world
from vk_fargate.aws import profilecheck
from vk_fargate.controllers import queueing
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.k8s import events, informers, kube, pods
from vk_fargate.k8s import profiles as k8s_profiles

log = logging.getLogger(__name__)
RECHECK_SECONDS = 2.0  # while a deleted profile still has pods
AWS_RETRY_SECONDS = 15.0  # when AWS could not be asked
DNS_CONDITION = "VpcDnsReady"
COMPONENT = "fargate-profiles"  # the events' source
Checker = Callable[[fargate_profiles.Profile], Awaitable[profilecheck.Verdict]]


class ProfileController:
    def __init__(
        self,
        api: kube.Kube,
        state: world.World,
        static: list[fargate_profiles.Profile],
        *,
        recorder: events.Recorder | None = None,
        checker: Checker | None = None,
        dns_recheck_seconds: float = 60.0,
    ) -> None:
        self.api = api
        self.world = state
        self.recorder = recorder
        self.checker = checker  # with an AWS backend: what AWS says of a profile
        self.checked: set[str] = set()  # profile UIDs checked by this process
        self.recheck_at: dict[str, float] = {}  # when a profile's VPC DNS is asked again
        self.dns_recheck_seconds = dns_recheck_seconds
        self.static = {p.name: p for p in static}
        # Parsed cluster profiles by (name, resourceVersion): the webhook reads them per pod.
        self._parsed: dict[tuple[str, str], fargate_profiles.Profile | None] = {}
        self.informer = informers.Informer(api, k8s_profiles.PATH, name="fargateprofiles")
        # What the webhook reads, from its own thread: replaced whole, never changed.
        self._snapshot: tuple[tuple[fargate_profiles.Profile, ...], int] = (
            tuple(self.static.values()),
            0,
        )
        self.informer.subscribe(self._publish)
        self.informer.subscribe(lambda _kind, obj: self.queue.add(obj["metadata"]["name"]))
        self.queue = queueing.Queue(self.reconcile, workers=2, name="profiles")

    def profiles(self) -> list[fargate_profiles.Profile]:
        """Every usable profile: the config file's, then the cluster's (by name).

        Read from the watch's cache, so every replica answers the webhook alike, not
        only the leader, which reconciles. Safe to call from any thread.
        """
        return list(self._snapshot[0])

    def _publish(self, _kind: str, _obj: kube.JSON) -> None:
        """Take a new snapshot of the profiles after the watch's cache changed."""
        cluster = (self._usable(obj) for _, obj in sorted(self.informer.cache.items()))
        usable = (p for p in cluster if p is not None and p.name not in self.static)
        self._snapshot = ((*self.static.values(), *usable), len(self.informer.cache))

    def created(self, name: str) -> str | None:
        """When profile ``name`` was created (RFC 3339); None for the config file's,
        which are there from the provider's start, and for unknown ones."""
        if name in self.static:
            return None
        obj = self.informer.cache.get(f"/{name}")
        return None if obj is None else str(obj["metadata"].get("creationTimestamp") or "")

    def _usable(self, obj: kube.JSON) -> fargate_profiles.Profile | None:
        """The profile ``obj`` holds, if it takes pods (ACTIVE or FAILED, not deleted)."""
        meta, status = obj["metadata"], obj.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("status") not in fargate_profiles.SELECTING:
            return None
        key = (meta["name"], str(meta.get("resourceVersion")))
        if key not in self._parsed:
            if len(self._parsed) > 4 * fargate_profiles.MAX_PROFILES:
                self._parsed.clear()
            try:
                profile = fargate_profiles.Profile.model_validate({"name": key[0], **obj["spec"]})
            except pydantic.ValidationError:
                self._parsed[key] = None  # reconcile marks it FAILED, saying why
            else:
                dns: dict[str, Any] = next(
                    (c for c in status.get("conditions") or [] if c.get("type") == DNS_CONDITION),
                    {},
                )
                self._parsed[key] = profile.model_copy(
                    update={
                        "status": status["status"],
                        "message": status.get("message") or "",
                        "vpc_dns_problem": (dns.get("message") or DNS_CONDITION)
                        if dns.get("status") == "False"
                        else "",
                    }
                )
        return self._parsed[key]

    def count(self) -> int:
        """How many profiles the cluster has; safe to call from any thread."""
        return self._snapshot[1]

    async def reconcile(self, name: str) -> None:
        obj = self.informer.cache.get(f"/{name}")
        if obj is None:
            return
        meta = obj["metadata"]
        status = (obj.get("status") or {}).get("status")
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
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
            if status != "FAILED":
                await k8s_profiles.set_status(self.api, name, "FAILED", problem)
            return
        if status is None:
            await k8s_profiles.set_status(self.api, name, "CREATING")
            return
        if self.checker is not None and meta["uid"] not in self.checked:
            wait = self.recheck_at.get(meta["uid"], 0.0) - time.monotonic()
            if wait > 0:  # its VPC's DNS was off: asked again then (an add drops timers)
                self.queue.later(name, wait)
            elif not await self._check(obj, profile):
                return
        elif status == "CREATING":
            await k8s_profiles.set_status(self.api, name, "ACTIVE")

    async def _check(self, obj: kube.JSON, profile: fargate_profiles.Profile) -> bool:
        """Ask AWS about the profile and record the verdict; whether the profile can be
        used as it stands (False: its update comes back through the watch, or a retry
        is due)."""
        assert self.checker is not None
        meta, current = obj["metadata"], obj.get("status") or {}
        try:
            verdict = await self.checker(profile)
        except errors.AwsError as exc:
            log.warning("profile %s: %s; retrying in %.0fs", meta["name"], exc, AWS_RETRY_SECONDS)
            self.queue.later(meta["name"], AWS_RETRY_SECONDS)
            # A new profile stays CREATING until AWS answers; an old one keeps its verdict.
            return current.get("status") != "CREATING"
        self.checked.add(meta["uid"])
        if verdict.dns_warnings:  # asked again until the VPC's DNS is on
            self.checked.discard(meta["uid"])
            self.recheck_at[meta["uid"]] = time.monotonic() + self.dns_recheck_seconds
            self.queue.later(meta["name"], self.dns_recheck_seconds)
        state, message = ("FAILED", verdict.problem) if verdict.problem else ("ACTIVE", "")
        conditions = dns_conditions(verdict, current.get("conditions") or [])
        if (current.get("status"), current.get("message") or "") == (state, message) and _same(
            conditions, current.get("conditions") or []
        ):
            return True
        await k8s_profiles.set_status(self.api, meta["name"], state, message, conditions)
        if self.recorder is not None:
            involved = {"apiVersion": k8s_profiles.API_VERSION, "kind": "FargateProfile", **obj}
            if verdict.problem:
                await self.recorder.record(
                    involved, "ProfileFailed", verdict.problem, warning=True, component=COMPONENT
                )
            for warning in verdict.dns_warnings:
                await self.recorder.record(
                    involved, "VpcDnsDisabled", warning, warning=True, component=COMPONENT
                )
        return False

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


def dns_conditions(
    verdict: profilecheck.Verdict, current: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The profile's conditions: ``VpcDnsReady`` from the verdict (its transition time
    kept while its status does not change; none without subnets, hence no VPC), the
    others as they were."""
    if not verdict.vpcs:
        return [c for c in current if c.get("type") != DNS_CONDITION]
    ready = "False" if verdict.dns_warnings else "True"
    previous = next((c for c in current if c.get("type") == DNS_CONDITION), {})
    stamp = previous.get("lastTransitionTime")
    if previous.get("status") != ready or not stamp:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": DNS_CONDITION,
        "status": ready,
        "reason": "VpcDnsDisabled" if verdict.dns_warnings else "VpcDnsEnabled",
        "message": "; ".join(verdict.dns_warnings)
        or f"{', '.join(verdict.vpcs)}: enableDnsSupport and enableDnsHostnames are on",
        "lastTransitionTime": stamp,
    }
    return [*(c for c in current if c.get("type") != DNS_CONDITION), condition]


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(c: dict[str, Any]) -> str:
        return str(c.get("type"))

    return sorted(a, key=key) == sorted(b, key=key)
