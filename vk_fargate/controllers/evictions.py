"""Patch evictions (``fargate-facts.md`` §5): when the fleet announces that a host is
draining, its pods leave through the Eviction API, so PodDisruptionBudgets apply.

One zone at a time, one pod at a time. An eviction a budget refuses (429) is retried
once after ``retry_seconds``; if it is refused again the pod is deleted, as Fargate
does. Every step is an event on the pod. Separately, a budget in a namespace served by
a profile that selects no pod gets a warning (the seed's ``simple-ninx-app`` typo).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable

from vk_fargate import errors, supervision, world
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.fleet import models
from vk_fargate.k8s import events, kube, pods

log = logging.getLogger(__name__)
COMPONENT = "fargate-scheduler"


@dataclasses.dataclass
class Evictions:
    api: kube.Kube
    recorder: events.Recorder
    world: world.World
    profiles: Callable[[], list[fargate_profiles.Profile]]
    retry_seconds: float = 30.0
    budget_check_seconds: float = 60.0
    _pending: collections.OrderedDict[str, models.MaintenanceNotice] = dataclasses.field(
        default_factory=collections.OrderedDict
    )
    _wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def notice(self, event: models.Event) -> None:
        """A maintenance notice from the fleet (called by the fleet watch)."""
        if event.notice is not None and event.notice.microvm_id in self.world.pods:
            self._pending[event.notice.microvm_id] = event.notice
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                zone = self._zone(next(iter(self._pending)))
                batch = [uid for uid in self._pending if self._zone(uid) == zone]
                for uid in batch:
                    notice = self._pending.pop(uid)
                    try:
                        await self._evict(uid, notice)
                    except errors.KubeError as exc:
                        log.warning("evicting pod %s failed: %s", uid, exc)

    def _zone(self, uid: str) -> str:
        vm = self.world.vms.get(uid)
        return (vm.status.zone or "") if vm else ""

    async def _evict(self, uid: str, notice: models.MaintenanceNotice) -> None:
        for attempt in (1, 2):
            pod = self.world.pods.get(uid)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return
            if attempt == 1:
                await self.recorder.record(
                    pod,
                    "Evicting",
                    f"{notice.message}: evicting the pod (PodDisruptionBudgets apply)",
                    component=COMPONENT,
                )
            try:
                await pods.evict(self.api, pod)
                await self.recorder.record(
                    pod,
                    "Evicted",
                    f"evicted for maintenance of host {notice.host}",
                    component=COMPONENT,
                )
                return
            except errors.KubeError as exc:
                if exc.status != 429:
                    raise
                if attempt == 1:
                    await self.recorder.record(
                        pod,
                        "EvictionBlocked",
                        f"a PodDisruptionBudget blocks the eviction "
                        f"({exc.message}); retrying once in {self.retry_seconds:g}s",
                        warning=True,
                        component=COMPONENT,
                    )
                    await asyncio.sleep(self.retry_seconds)
        pod = self.world.pods.get(uid)
        if pod is not None and not pod["metadata"].get("deletionTimestamp"):
            await self.recorder.record(
                pod,
                "EvictionForced",
                "the eviction was blocked twice: deleting the pod for "
                f"maintenance of host {notice.host}",
                warning=True,
                component=COMPONENT,
            )
            meta = pod["metadata"]
            await self.api.delete(pods.path(meta["namespace"], meta["name"]))

    async def watch_budgets(self) -> None:
        """Warn about budgets that protect nothing, in namespaces profiles serve."""
        outage = supervision.Outage(log, "checking PodDisruptionBudgets")
        while True:
            try:
                await self._check_budgets()
                outage.ended()
            except errors.KubeUnavailable as exc:
                outage.failed(exc)
            except errors.KubeError as exc:
                log.warning("checking PodDisruptionBudgets failed: %s", exc)
            await asyncio.sleep(self.budget_check_seconds)

    async def _check_budgets(self) -> None:
        namespaces = [s.namespace for p in self.profiles() for s in p.selectors]
        if not namespaces:
            return
        budgets = (await self.api.get("/apis/policy/v1/poddisruptionbudgets")).get("items") or []
        for pdb in budgets:
            ns = pdb["metadata"]["namespace"]
            if not any(
                fargate_profiles.selector_matches(fargate_profiles.Selector(namespace=n), ns, {})
                for n in namespaces
            ):
                continue
            selector = label_selector((pdb.get("spec") or {}).get("selector") or {})
            found = await self.api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=selector)
            if not found.get("items"):
                await self.recorder.record(
                    {**pdb, "apiVersion": "policy/v1", "kind": "PodDisruptionBudget"},
                    "SelectsNoPods",
                    f"PodDisruptionBudget {ns}/{pdb['metadata']['name']} selects no "
                    f"pods ({selector or 'empty selector'}): it protects nothing from Fargate "
                    "patch evictions; check its selector",
                    warning=True,
                    component=COMPONENT,
                )


def label_selector(selector: kube.JSON) -> str:
    """A LabelSelector as the API's query string."""
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)
