"""Leader election on a coordination.k8s.io Lease, as client-go does it.

Replicas of the provider all serve the kubelet API and the webhooks, but only the
leader schedules and reconciles. Every ``retry`` seconds a candidate looks at the Lease
and the leader renews it. A candidate takes the Lease when it is free, or when it has
seen no change to it (holder, renewTime) for ``duration`` seconds of its *own* clock:
like client-go it never compares the holder's renewTime with its own clock, so clock
skew between nodes cannot end a live leader's term early. A leader that could not renew
for ``renew_deadline`` seconds (shorter than ``duration``) stops leading before anyone
may take over, so two replicas never both lead. Optimistic concurrency (the Lease's
resourceVersion) makes a takeover race safe: of two writers one gets 409 and stays a
follower.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from vk_fargate import errors
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    def __init__(
        self,
        api: kube.Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry: float = 2.0,
    ) -> None:
        if not 0 < retry < renew_deadline < duration:
            raise errors.ConfigError(
                f"leader election needs retry < renew deadline < lease duration, got "
                f"{retry}s, {renew_deadline}s, {duration}s"
            )
        self.api = api
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = renew_deadline
        self.retry = retry
        self._observed: tuple[object, ...] | None = None  # the Lease's holder and renewTime
        self._observed_at = 0.0  # this process's clock when they last changed
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    async def _try(self) -> bool:
        """One attempt to take or keep the Lease; whether we hold it now."""
        now = _now()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": _micro(now),
        }
        try:
            lease = await self.api.get(self.path)
        except errors.KubeError as exc:
            if not exc.not_found:
                raise
            try:
                await self.api.create(
                    self.collection,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0},
                    },
                )
                return True
            except errors.KubeError as again:
                if again.conflict:
                    return False
                raise
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        clock = asyncio.get_running_loop().time()
        observed = (holder, current.get("renewTime"), current.get("leaseTransitions"))
        if observed != self._observed:
            self._observed, self._observed_at = observed, clock
        held_for = float(current.get("leaseDurationSeconds") or self.duration)
        expired = clock - self._observed_at > held_for
        if holder not in (self.identity, None, "") and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": {**current, **spec}}
        try:
            await self.api.request("PUT", self.path, body=body)
        except errors.KubeError as exc:
            if exc.conflict:
                return False
            raise
        return True

    async def run(self) -> None:
        """Campaign, then lead until renewals fail for ``renew_deadline`` (sets ``lost``)."""
        while not self.leading.is_set():
            try:
                if await self._try():
                    log.info("became the leader (%s)", self.identity)
                    self.leading.set()
                    break
            except (errors.KubeError, OSError, TimeoutError) as exc:
                log.warning("leader election attempt failed: %s", exc)
            await asyncio.sleep(self.retry)
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.retry)
            try:
                if await self._try():
                    last = asyncio.get_running_loop().time()
                    continue
                log.error("another replica took the leader lease")
            except (errors.KubeError, OSError, TimeoutError) as exc:
                log.warning("renewing the leader lease failed: %s", exc)
                if asyncio.get_running_loop().time() - last < self.renew_deadline:
                    continue
            self.lost.set()
            return

    async def release(self) -> None:
        """Give the Lease up at shutdown, so a standby takes over at once."""
        if not self.leading.is_set():
            return
        try:
            lease = await self.api.get(self.path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                await self.api.request("PUT", self.path, body=lease)
        except errors.KubeError as exc:
            log.warning("could not release the leader lease: %s", exc)
