"""Recording Kubernetes Events (core/v1), aggregated like kubelet's recorder: the same
reason and message on the same object bumps ``count`` instead of piling up objects.
"""

from __future__ import annotations

import collections
import datetime
import logging
import secrets

from vk_fargate import errors
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)
REMEMBERED = 4096  # events whose count we may still bump


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Recorder:
    def __init__(self, api: kube.Kube, *, component: str, instance: str) -> None:
        self.api = api
        self.component = component
        self.instance = instance
        self._seen: collections.OrderedDict[tuple[str, str, str, str], tuple[str, int]] = (
            collections.OrderedDict()
        )

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
        """Record an event on ``obj``; failures are logged, never raised."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        source = component or self.component
        key = (meta.get("uid", ""), reason, message, source)
        now = _now()
        try:
            if key in self._seen:
                name, count = self._seen[key]
                await self.api.patch(
                    f"/api/v1/namespaces/{namespace}/events/{name}",
                    {"count": count + 1, "lastTimestamp": now},
                    kind=kube.MERGE_PATCH,
                )
                self._seen[key] = (name, count + 1)
                self._seen.move_to_end(key)
                return
            name = f"{meta['name']}.{secrets.token_hex(8)}"
            involved = {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            }
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {k: v for k, v in involved.items() if v},
                "reason": reason,
                "message": message,
                "type": "Warning" if warning else "Normal",
                "source": {"component": source, **({"host": host} if host else {})},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "reportingComponent": source,
                "reportingInstance": self.instance,
            }
            await self.api.create(f"/api/v1/namespaces/{namespace}/events", event)
            self._seen[key] = (name, 1)
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        except errors.KubeError as exc:
            self._seen.pop(key, None)
            log.warning(
                "could not record event %s on %s/%s: %s", reason, namespace, meta["name"], exc
            )
