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
IndexFunc = Callable[[kube.JSON], list[str]]  # an object's values in one index
WATCH_TIMEOUT = 290  # seconds the server keeps a watch open before we re-watch
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0


class _Gone(Exception):
    """The resource version is too old: relist."""


def key(obj: kube.JSON) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def version(obj: kube.JSON) -> int | None:
    """The object's resourceVersion as a number (etcd's revision), if it is one."""
    text = str(obj["metadata"].get("resourceVersion") or "")
    return int(text) if text.isdigit() else None


def _ahead(cached: kube.JSON, obj: kube.JSON) -> bool:
    """Whether the cached object is later than ``obj`` (one of our writes, which the
    watch has not reached yet)."""
    mine, theirs = version(cached), version(obj)
    return mine is not None and theirs is not None and mine > theirs


class Indexer:
    """Objects by key (``namespace/name``), with named indexes over them."""

    def __init__(self) -> None:
        self.cache: dict[str, kube.JSON] = {}
        self.indices: dict[str, dict[str, set[str]]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self.seen_version = 0  # how far the watch has come (resourceVersion)

    def add_indexer(self, name: str, function: IndexFunc) -> None:
        """Index every object, those cached already and those to come, by ``function``."""
        self._indexers[name] = function
        self.indices[name] = {}
        for name_, obj in self.cache.items():
            self._index(name, name_, obj)

    def by_index(self, name: str, value: str) -> list[kube.JSON]:
        """The cached objects whose index ``name`` has ``value``."""
        return [self.cache[k] for k in self.indices[name].get(value, ())]

    def get(self, key_: str) -> kube.JSON | None:
        return self.cache.get(key_)

    def store(self, obj: kube.JSON) -> None:
        """Cache ``obj`` (an add or update), unless the cache has a later version of it.

        Its ``managedFields`` are dropped first, as controller-runtime's caches drop
        them: nothing here reads them, they are often the larger part of a pod or node,
        and an update sent without them keeps the server's own."""
        obj["metadata"].pop("managedFields", None)
        name = key(obj)
        old = self.cache.get(name)
        if old is not None and _ahead(old, obj):
            return
        if old is not None:
            self._unindex(name, old)
        self.cache[name] = obj
        for index in self._indexers:
            self._index(index, name, obj)

    def remove(self, obj: kube.JSON) -> None:
        """Drop ``obj`` (a deletion): only that object, never a same-named successor."""
        name = key(obj)
        old = self.cache.get(name)
        if old is None or old["metadata"].get("uid") != obj["metadata"].get("uid"):
            return
        self._unindex(name, old)
        del self.cache[name]

    def wrote(self, obj: kube.JSON) -> None:
        """Read your writes: cache what a write of ours returned, when it is newer than
        the cached version, or new and not yet reached by the watch (a create)."""
        old = self.cache.get(key(obj))
        mine, floor = version(obj), self.seen_version if old is None else version(old)
        if mine is not None and floor is not None and mine > floor:
            self.store(obj)

    def _index(self, index: str, name: str, obj: kube.JSON) -> None:
        for value in self._indexers[index](obj):
            self.indices[index].setdefault(value, set()).add(name)

    def _unindex(self, name: str, obj: kube.JSON) -> None:
        for index, function in self._indexers.items():
            values = self.indices[index]
            for value in function(obj):
                keys = values.get(value)
                if keys is not None:
                    keys.discard(name)
                    if not keys:
                        del values[value]


class Informer(Indexer):
    def __init__(
        self,
        api: kube.Kube,
        path: str,
        *,
        name: str,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        super().__init__()
        self.api = api
        self.path = path
        self.name = name
        self.selectors = {"fieldSelector": field_selector, "labelSelector": label_selector}
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
                listed = await self._relist()
                self._outage.ended()
                backoff.reset()
                while True:
                    listed = await self._watch(listed)
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
        listed_version = str(listed["metadata"]["resourceVersion"])
        at = int(listed_version) if listed_version.isdigit() else None
        fresh = {key(obj): obj for obj in listed.get("items") or []}
        for gone in set(self.cache) - set(fresh):
            obj = self.cache[gone]
            if at is None or (version(obj) or 0) <= at:  # else ours, written since
                self.remove(obj)
                self._emit("DELETED", obj)
        for name, obj in fresh.items():
            old = self.cache.get(name)
            if old is not None and _ahead(old, obj):
                continue  # ours, written since the list
            if old is not None and old["metadata"].get("uid") != obj["metadata"].get("uid"):
                self.remove(old)  # replaced by a same-named successor while unwatched
                self._emit("DELETED", old)
                old = None
            self.store(obj)
            if old is None:
                self._emit("ADDED", obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj)
        self.seen_version = max(self.seen_version, at or 0)
        self.synced.set()
        return listed_version

    async def _watch(self, resource_version: str) -> str:
        try:
            async for event in self.api.stream_lines(
                self.path,
                watch=True,
                resourceVersion=resource_version,
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
                resource_version = str(
                    obj.get("metadata", {}).get("resourceVersion", resource_version)
                )
                if resource_version.isdigit():
                    self.seen_version = max(self.seen_version, int(resource_version))
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.remove(obj)
                else:
                    self.store(obj)
                self._emit(str(kind), obj)
        except errors.KubeError as exc:
            if exc.status == 410:
                raise _Gone from exc
            raise
        return resource_version
