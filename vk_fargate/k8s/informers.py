"""List+watch of one collection, kept as a cache, surviving whatever the server does.

A relist (at start, after ``410 Gone``, after a broken connection or an API server
restart) is diffed against the cache, so handlers see the deletions and changes they
missed, exactly once, as if the watch had never broken. Bookmarks only move the
resource version. One informer serves the whole cluster (not one watch per object).
Handlers are synchronous and must not block: they enqueue work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from vk_fargate import errors, supervision
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)

Handler = Callable[[str, kube.JSON], None]  # ("ADDED"|"MODIFIED"|"DELETED", object)
WATCH_TIMEOUT = 290  # seconds the server keeps a watch open before we re-watch
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0


class _Gone(Exception):
    """The resource version is too old: relist."""


def key(obj: kube.JSON) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class Informer:
    def __init__(
        self,
        api: kube.Kube,
        path: str,
        *,
        name: str,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.api = api
        self.path = path
        self.name = name
        self.selectors = {"fieldSelector": field_selector, "labelSelector": label_selector}
        self.cache: dict[str, kube.JSON] = {}
        self.synced = asyncio.Event()
        self.restarts = 0
        self._handlers: list[Handler] = []
        self._outage = supervision.Outage(log, f"informer {name}")

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def _emit(self, kind: str, obj: kube.JSON) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj)
            except Exception:
                log.exception("informer %s: handler failed on %s %s", self.name, kind, key(obj))

    async def run(self) -> None:
        """List and watch forever; returns only when cancelled."""
        backoff = supervision.Backoff(BACKOFF_MIN, BACKOFF_MAX)
        while True:
            try:
                version = await self._relist()
                self._outage.ended()
                backoff.reset()
                while True:
                    version = await self._watch(version)
            except _Gone:
                log.info("informer %s: resource version expired, relisting", self.name)
            except (
                errors.KubeError,
                aiohttp.ClientError,
                TimeoutError,
                OSError,
                ValueError,
            ) as exc:
                self.restarts += 1
                self._outage.failed(exc)  # a broken watch, then relists that fail
                await backoff.sleep()

    async def _relist(self) -> str:
        listed = await self.api.get(self.path, **self.selectors)
        fresh = {key(obj): obj for obj in listed.get("items") or []}
        for gone in set(self.cache) - set(fresh):
            self._emit("DELETED", self.cache.pop(gone))
        for name, obj in fresh.items():
            old = self.cache.get(name)
            self.cache[name] = obj
            if old is None:
                self._emit("ADDED", obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj)
        self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        try:
            async for event in self.api.stream_lines(
                self.path,
                watch=True,
                resourceVersion=version,
                allowWatchBookmarks=True,
                timeoutSeconds=WATCH_TIMEOUT,
                **self.selectors,
            ):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise errors.KubeError(
                        int(obj.get("code", 500)), str(obj.get("reason")), str(obj.get("message"))
                    )
                version = str(obj.get("metadata", {}).get("resourceVersion", version))
                if kind == "BOOKMARK":
                    continue
                name = key(obj)
                if kind == "DELETED":
                    self.cache.pop(name, None)
                else:
                    self.cache[name] = obj
                self._emit(str(kind), obj)
        except errors.KubeError as exc:
            if exc.status == 410:
                raise _Gone from exc
            raise
        return version
