"""The kubelet HTTPS server: ``/containerLogs``, ``/pods`` and ``/healthz`` for every
virtual node the provider runs.

One server answers for all virtual nodes (each advertises its port); the pod in the
path says which node a request is for. Log bodies are streamed chunk by chunk, each
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
from vk_fargate.k8s import kube, reviews
from vk_fargate.kubelet import auth

log = logging.getLogger(__name__)

JSON = kube.JSON
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IDENTITY: web.RequestKey[reviews.Identity] = web.RequestKey("identity", reviews.Identity)
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


class Backend(Protocol):
    """The provider, as the kubelet API sees it."""

    def pod(self, namespace: str, name: str) -> tuple[JSON, str] | None:
        """The pod and the name of its node, if this provider runs it."""

    def pods(self) -> list[JSON]:
        """Every pod this provider runs."""

    def logs(self, pod: JSON, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The container's log; raises ``errors.NotFound``/``errors.BadRequest``.

        Errors raised before the first chunk become that status; later ones end the body.
        """


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


def container_names(pod: JSON) -> set[str]:
    spec = pod.get("spec") or {}
    kinds = ("containers", "initContainers", "ephemeralContainers")
    return {str(c.get("name")) for kind in kinds for c in spec.get(kind) or ()}


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
    ) -> None:
        self.backend = backend
        self.guard = guard
        self.tls = tls
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_and_authentication])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
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
                peercert = transport.get_extra_info("peercert") if transport else None
                request[IDENTITY] = await self.guard.authenticate(
                    peercert=peercert, authorization=request.headers.get("Authorization")
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

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        # One server answers for every virtual node, so listing needs every node.
        await self.guard.authorize(request[IDENTITY], node="", path=request.path)
        pods = self.backend.pods()
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        )

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        name = request.match_info["pod"]
        container = request.match_info["container"]
        found = self.backend.pod(namespace, name)
        # A pod we do not run belongs to no node of ours: saying so needs every node.
        node = found[1] if found is not None else ""
        await self.guard.authorize(request[IDENTITY], node=node, path=request.path)
        if found is None:
            raise errors.NotFound(f'pod "{namespace}/{name}" does not exist')
        pod = found[0]
        if container not in container_names(pod):
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
