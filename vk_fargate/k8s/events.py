"""Recording Kubernetes Events (core/v1), aggregated like kubelet's recorder: the same
reason and message on the same object bumps ``count`` instead of piling up objects.

Written in the background, as the kubelet's broadcaster does: ``record`` queues the
event (stamped now) and returns, so a pod's placement and status writes never wait for
its events. Each object's events go through one sender, in order (which the count bump
relies on); objects are spread over a few senders. Events beyond ``MAX_PENDING``
waiting are dropped with a warning, as the kubelet drops them when its queue is full.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import logging
import secrets
import zlib

from vk_fargate import errors, supervision
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)
REMEMBERED = 4096  # events whose count we may still bump
SENDERS = 4
MAX_PENDING = 4096


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class _Event:
    involved: kube.JSON
    namespace: str
    name: str  # the object's
    reason: str
    message: str
    kind: str  # Normal or Warning
    source: str
    host: str | None
    at: str


class Recorder:
    def __init__(self, api: kube.Kube, *, component: str, instance: str) -> None:
        self.api = api
        self.component = component
        self.instance = instance
        self._seen: collections.OrderedDict[tuple[str, str, str, str], tuple[str, int]] = (
            collections.OrderedDict()
        )
        self._queues: list[asyncio.Queue[_Event]] = []
        self._senders = supervision.Tasks()
        self._dropped = 0

    async def record(
        self,
        obj: kube.JSON,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str | None = None,
        host: str | None = None,
    ) -> None:
        """Queue an event on ``obj``; it is written in the background. Never raises."""
        meta = obj["metadata"]
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        }
        event = _Event(
            involved={k: v for k, v in involved.items() if v},
            namespace=meta.get("namespace") or "default",
            name=meta["name"],
            reason=reason,
            message=message,
            kind="Warning" if warning else "Normal",
            source=component or self.component,
            host=host,
            at=_now(),
        )
        if not self._queues:
            self._start()
        if sum(q.qsize() for q in self._queues) >= MAX_PENDING:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("events are written slower than they come: %d dropped", self._dropped)
            return
        key = str(meta.get("uid") or meta["name"]).encode()
        self._queues[zlib.crc32(key) % SENDERS].put_nowait(event)

    def _start(self) -> None:
        for n in range(SENDERS):
            queue: asyncio.Queue[_Event] = asyncio.Queue()
            self._senders.forever(f"events-sender-{n}", functools.partial(self._send_all, queue))
            self._queues.append(queue)

    async def flush(self) -> None:
        """Wait until every event queued so far is written (or given up)."""
        for queue in self._queues:
            await queue.join()

    async def close(self, *, grace: float = 2.0) -> None:
        """Write what is queued (for at most ``grace`` seconds), then stop the senders."""
        try:
            async with asyncio.timeout(grace):
                await self.flush()
        except TimeoutError:
            log.warning("stopping with events not written")
        await self._senders.stop()

    async def _send_all(self, queue: asyncio.Queue[_Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._send(event)
            except Exception:  # a bug: its traceback, and the sender goes on
                log.exception("writing event %s on %s failed", event.reason, event.name)
            finally:
                queue.task_done()

    async def _send(self, event: _Event) -> None:
        """Write ``event``, or bump the count of its earlier twin; failures are logged."""
        key = (str(event.involved.get("uid", "")), event.reason, event.message, event.source)
        try:
            if key in self._seen:
                name, count = self._seen[key]
                await self.api.patch(
                    f"/api/v1/namespaces/{event.namespace}/events/{name}",
                    {"count": count + 1, "lastTimestamp": event.at},
                    kind=kube.MERGE_PATCH,
                )
                self._seen[key] = (name, count + 1)
                self._seen.move_to_end(key)
                return
            name = f"{event.name}.{secrets.token_hex(8)}"
            source = {"component": event.source} | ({"host": event.host} if event.host else {})
            document = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": event.namespace},
                "involvedObject": event.involved,
                "reason": event.reason,
                "message": event.message,
                "type": event.kind,
                "source": source,
                "firstTimestamp": event.at,
                "lastTimestamp": event.at,
                "count": 1,
                "reportingComponent": event.source,
                "reportingInstance": self.instance,
            }
            await self.api.create(f"/api/v1/namespaces/{event.namespace}/events", document)
            self._seen[key] = (name, 1)
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        except errors.KubeError as exc:
            self._seen.pop(key, None)
            log.warning(
                "could not record event %s on %s/%s: %s",
                *(event.reason, event.namespace, event.name, exc),
            )
