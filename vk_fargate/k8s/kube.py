"""A small JSON door to the API server on top of kubernetes_asyncio's ApiClient.

Objects travel as plain JSON dicts, never as generated models: patches stay exact,
unknown fields survive, and no response is parsed into classes (which also avoids
the client's bogus ``ValueError`` when it parses a Binding response). Errors come
back as ``errors.KubeError`` with the API's status, reason and message; a server that
cannot be reached or breaks the connection as ``errors.KubeUnavailable``, so callers
ride out an API-server restart by catching ``KubeError`` alone. ``unreachable_since``
says whether the last request found the server down (for ``/readyz``). Answers and
watch lines are parsed with orjson (the hot path: every pod of a watch, every list);
request bodies are small, and kubernetes_asyncio encodes them (its ``call_api`` sends
a JSON body only through ``json.dumps``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from vk_fargate import errors, metrics

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class Kube:
    """Raw JSON calls through an ApiClient (authentication and TLS are its business)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.requests = 0  # every request made, for the benchmarks
        self.unreachable_since: float | None = None  # monotonic time of the outage's start

    @contextlib.contextmanager
    def _transport(self) -> Iterator[None]:
        """Map a failure to reach the server to ``KubeUnavailable`` and keep track of
        the outage: it lasts until a request gets an answer."""
        try:
            yield
        except (aiohttp.ClientError, TimeoutError) as exc:  # aiohttp's own timeouts
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
            reason = f"{type(exc).__name__}: {exc}"
            raise errors.KubeUnavailable(f"the API server did not answer: {reason}") from exc
        except errors.KubeError:  # an answer, if an error status
            self.unreachable_since = None
            raise
        self.unreachable_since = None

    async def close(self) -> None:
        await self.api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = None,
    ) -> aiohttp.ClientResponse:
        self.requests += 1
        metrics.KUBE_REQUESTS.labels(method, resource_of(path)).inc()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = [
            (k, str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in (query or {}).items()
            if v is not None
        ]
        with self._transport():
            response: aiohttp.ClientResponse = await self.api.call_api(
                path,
                method,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
            if response.status >= 400:
                async with response:
                    raise _error(response.status, await response.read())
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSON:
        response = await self._send(method, path, query=query, body=body, content_type=content_type)
        with self._transport():
            async with response:
                data = await response.read()
        return orjson.loads(data) if data else {}

    async def get(self, path: str, **query: Any) -> JSON:
        return await self.request("GET", path, query=query)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, *, kind: str = STRATEGIC_MERGE_PATCH) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=kind)

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self.request("DELETE", path, body=body)

    async def stream_lines(self, path: str, **query: Any) -> AsyncIterator[JSON]:
        """A watch: one JSON object per line until the server ends the stream."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        response = await self._send("GET", path, query=query, timeout=timeout)
        async with response:
            buffer = b""
            chunks = aiter(response.content.iter_any())
            while True:
                with self._transport():
                    chunk = await anext(chunks, None)
                if chunk is None:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)

    async def raw(self, path: str, **query: Any) -> aiohttp.ClientResponse:
        """A streaming GET whose body the caller reads (and closes)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        return await self._send("GET", path, query=query, timeout=timeout)


def _error(status: int, body: bytes) -> errors.KubeError:
    try:
        document = orjson.loads(body)
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    return errors.KubeError(
        status,
        str(document.get("reason", "")),
        str(document.get("message", body[:300].decode(errors="replace"))),
    )


def resource_of(path: str) -> str:
    """The resource (and subresource) a request path names, for the request metrics:
    ``/api/v1/namespaces/ns/pods/p/status`` is ``pods/status``."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return ""
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
