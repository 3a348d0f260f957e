"""The kubelet HTTPS server: ``/containerLogs``, ``/pods``, ``/stats/summary``,
``/metrics/resource``, ``/exec`` and ``/attach`` (``remotecommand``), ``/portForward``
(``portforward``) and ``/healthz`` for every virtual node the provider runs, and a plain
501 for ``/run``.

One server answers for all virtual nodes, on one port per node besides its own: a
node's ``daemonEndpoints`` port says which node a request is for, which matters where
the path names no pod (``/stats/summary``, ``/metrics/resource``, ``/pods``: metrics-server
scrapes each node's address and port, and must get that node's numbers, not every
node's). On the provider's own port, ``/pods`` lists every node's pods and
``/containerLogs`` works for any pod. Log bodies are streamed chunk by chunk, each
written as the backend yields it, and a ``follow`` ends when the backend's iterator
ends or the client hangs up (the handler is then cancelled and the iterator closed).
Every query parameter is validated as the API server validates PodLogOptions, so a
bad one is a 400 naming it, never a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web

from vk_fargate import errors, listening
from vk_fargate.fleet import models
from vk_fargate.k8s import kube
from vk_fargate.kubelet import auth, sessions, stats, streaming

log = logging.getLogger(__name__)

JSON = kube.JSON
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# How long a log request waits for its first chunk before sending the headers anyway: a
# backend error raised sooner becomes a proper status code, and an idle ``follow`` still
# gets its headers promptly.
FIRST_CHUNK_WAIT = 1.0
INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}"  # date and time
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"  # fraction, zone (required)
)


@dataclasses.dataclass(frozen=True)
class LogOptions:
    """What a ``/containerLogs`` request asks for (the kubelet's PodLogOptions)."""

    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    previous: bool = False
    since_seconds: int | None = None
    since_time: datetime.datetime | None = None
    timestamps: bool = False


class Backend(streaming.Pods, Protocol):
    """The provider, as the kubelet API sees it."""

    def pods(self) -> list[JSON]:
        """Every pod this provider runs."""

    def logs(self, pod: JSON, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The container's log; raises ``errors.NotFound``/``errors.BadRequest``.

        Errors raised before the first chunk become that status; later ones end the body.
        """

    def node_pod(self, node: str) -> tuple[JSON, JSON] | None:
        """The virtual node ``node`` and the pod it runs, if it is one of ours."""

    async def stats(self, pod: JSON) -> models.MicroVMStats:
        """The readings of the pod's microVM; raises a ``FleetError`` when there are none."""


def _bool(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = raw.lower()
    if value not in ("true", "false", "1", "0"):
        raise errors.BadRequest(f"{name} must be true, false, 1 or 0, not {raw!r}")
    return value in ("true", "1")


def _int(query: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw):
        raise errors.BadRequest(f"{name} must be an integer, not {raw!r}")
    value = int(raw)
    if value > INT64_MAX:
        raise errors.BadRequest(f"{name} is out of range: {raw}")
    if value < minimum:
        raise errors.BadRequest(f"{name} must be at least {minimum}, not {value}")
    return value


def _time(query: Mapping[str, str], name: str) -> datetime.datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not _RFC3339.fullmatch(raw):
        raise errors.BadRequest(
            f"{name} must be an RFC 3339 time such as 2024-05-01T12:00:00Z, not {raw!r}"
        )
    try:
        return datetime.datetime.fromisoformat(raw.upper())
    except ValueError as exc:
        raise errors.BadRequest(f"{name} is not a valid time: {raw!r} ({exc})") from exc


def parse_log_options(query: Mapping[str, str]) -> LogOptions:
    """The options of a ``/containerLogs`` query; ``errors.BadRequest`` names a bad one.

    Unknown parameters are ignored, as kubelet ignores them.
    """
    options = LogOptions(
        follow=_bool(query, "follow"),
        tail_lines=_int(query, "tailLines", minimum=0),
        limit_bytes=_int(query, "limitBytes", minimum=1),
        previous=_bool(query, "previous"),
        since_seconds=_int(query, "sinceSeconds", minimum=1),
        since_time=_time(query, "sinceTime"),
        timestamps=_bool(query, "timestamps"),
    )
    if options.since_seconds is not None and options.since_time is not None:
        raise errors.BadRequest("at most one of sinceSeconds and sinceTime may be given")
    return options


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


class KubeletServer:
    """The kubelet API over HTTPS, bound to ``host``:``port`` (0 picks a free port)."""

    def __init__(
        self,
        backend: Backend,
        guard: auth.Guard,
        tls: ssl.SSLContext,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        streams: sessions.Sessions | None = None,
        stream_idle_timeout: float = 14400.0,
    ) -> None:
        self.backend = backend
        self.streams = streams or sessions.Sessions(per_pod=16, total=256)
        self.stream_idle_timeout = stream_idle_timeout
        self.guard = guard
        self.tls = tls
        self.host = host
        self.port = port
        self.rates = stats.Rates()
        self._runner: web.AppRunner | None = None
        self._sites: dict[str, tuple[web.SockSite, int]] = {}  # node -> its site and port
        self._nodes: dict[int, str] = {}  # port -> node
        self._uids: dict[str, str] = {}  # node -> pod UID whose CPU samples ``rates`` keeps

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_and_authentication])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        app.router.add_get("/stats/summary", self._summary)
        app.router.add_get("/metrics/resource", self._resource_metrics)
        streaming.Routes(self).add_to(app.router)
        return app

    async def start(self) -> int:
        """Serve; returns the bound port."""
        # Cancels a handler whose client hung up, which is what ends a ``follow``.
        self._runner, self.port = await listening.serve(
            self.application(),
            host=self.host,
            port=self.port,
            tls=self.tls,
            handler_cancellation=True,
        )
        log.info("kubelet API serving on https://%s:%d", self.host, self.port)
        return self.port

    async def serve_node(self, node: str, port: int = 0) -> int:
        """Answer for ``node`` alone on ``port`` too (0: a free one); the port. Idempotent;
        ``errors.ConfigError`` when the port is taken."""
        if self._runner is None:
            raise errors.ConfigError("the kubelet API is not serving")
        current = self._sites.get(node)
        if current is not None and port in (0, current[1]):
            return current[1]
        if current is not None:
            await self.stop_node(node)
        site, bound = await listening.add_site(
            self._runner, host=self.host, port=port, tls=self.tls
        )
        self._sites[node] = (site, bound)
        self._nodes[bound] = node
        return bound

    async def stop_node(self, node: str) -> None:
        """Stop answering on ``node``'s own port (the node is gone)."""
        current = self._sites.pop(node, None)
        if current is not None:
            self._nodes.pop(current[1], None)
            await current[0].stop()
        uid = self._uids.pop(node, None)
        if uid is not None:
            self.rates.forget(uid)

    def serving(self) -> dict[str, int]:
        """Each node served on its own port, and the port."""
        return {node: port for node, (_, port) in self._sites.items()}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors_and_authentication(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        try:
            if request.path != "/healthz":
                transport = request.transport
                tls = transport.get_extra_info("ssl_object") if transport else None
                request[auth.IDENTITY] = await self.guard.authenticate(
                    certificate=tls.getpeercert(binary_form=True) if tls else None,
                    authorization=request.headers.get("Authorization"),
                )
            return await handler(request)
        except (errors.FleetError, auth.AuthError) as exc:
            return listening.text(exc.message, exc.status)
        except (web.HTTPException, ConnectionError):
            raise
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return listening.text("internal error; see the virtual kubelet's log", 500)

    async def _healthz(self, _: web.Request) -> web.StreamResponse:
        return listening.text("ok", 200)

    def _node_of(self, request: web.Request) -> str | None:
        """The node whose own port the request came in on (None: the provider's port)."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self._nodes.get(sockname[1]) if sockname else None

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        node = self._node_of(request)
        # On the provider's own port, listing means every node's pods.
        await self.guard.authorize(request[auth.IDENTITY], node=node or "", path=request.path)
        pods = self.backend.pods()
        if node is not None:
            pods = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node]
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        )

    async def _readings(self, request: web.Request) -> tuple[JSON, JSON, models.MicroVMStats]:
        """The node the request is for, its pod and their readings (authorized)."""
        node_name = self._node_of(request)
        if node_name is None:
            raise errors.NotFound(
                f"{request.path} is served on each virtual node's own port "
                "(the node's status.daemonEndpoints.kubeletEndpoint.Port), not this one"
            )
        await self.guard.authorize(request[auth.IDENTITY], node=node_name, path=request.path)
        found = self.backend.node_pod(node_name)
        if found is None:
            raise errors.NotFound(f"node {node_name} runs no pod now")
        node, pod = found
        self._uids[node_name] = pod["metadata"]["uid"]
        return node, pod, await self.backend.stats(pod)

    async def _summary(self, request: web.Request) -> web.StreamResponse:
        # only_cpu_and_memory (older metrics-server) changes nothing: that is all we have.
        node, pod, readings = await self._readings(request)
        return web.json_response(stats.summary(node, pod, readings, self.rates))

    async def _resource_metrics(self, request: web.Request) -> web.StreamResponse:
        _, pod, readings = await self._readings(request)
        return web.Response(
            body=stats.resource_metrics([(pod, readings)], node=readings).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        name = request.match_info["pod"]
        container = request.match_info["container"]
        found = self.backend.pod(namespace, name)
        # A pod we do not run belongs to no node of ours: saying so needs every node.
        node = found[1] if found is not None else ""
        await self.guard.authorize(request[auth.IDENTITY], node=node, path=request.path)
        if found is None:
            raise errors.NotFound(f'pod "{namespace}/{name}" does not exist')
        pod = found[0]
        if container not in streaming.container_names(pod):
            raise errors.NotFound(f'container "{container}" not found in pod "{namespace}/{name}"')
        options = parse_log_options(request.query)
        chunks = self.backend.logs(pod, container, options)
        return await _stream(request, chunks, options, f"{namespace}/{name}/{container}")


async def _stream(
    request: web.Request, chunks: AsyncIterator[bytes], options: LogOptions, what: str
) -> web.StreamResponse:
    """Write ``chunks`` as a chunked body, stopping at ``limit_bytes``; closes ``chunks``."""
    loop = asyncio.get_running_loop()
    first = loop.create_task(_next(chunks), name=f"kubelet-logs-first-chunk {what}")
    try:
        await asyncio.wait({first}, timeout=FIRST_CHUNK_WAIT)
        if first.done():
            first.result()  # an error before the body is a status code (via the middleware)
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        remaining = options.limit_bytes
        try:
            chunk = await first
            while chunk is not None:
                if remaining is not None:
                    chunk = chunk[:remaining]
                    remaining -= len(chunk)
                if chunk:
                    await response.write(chunk)
                if remaining == 0:
                    break
                chunk = await _next(chunks)
        except (errors.FleetError, errors.KubeError) as exc:
            log.info("log stream of %s ended early: %s", what, exc)
            response.force_close()
        except ConnectionError:  # the client hung up: nothing to tell it
            raise
        except Exception:
            log.exception("log stream of %s failed", what)
            response.force_close()
        return response
    finally:
        if not first.done():
            first.cancel()
            await asyncio.wait({first})
        if not first.cancelled():
            first.exception()  # retrieved: it was raised above or is None
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                log.exception("closing the log stream of %s failed", what)
