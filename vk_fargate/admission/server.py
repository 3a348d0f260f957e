"""The admission webhooks over HTTPS: ``POST /mutate-pods``, ``POST /validate-profiles``
and ``GET /healthz``.

The API server calls this for every pod created in the cluster, so it must answer fast
and never fall over: a request that is not an AdmissionReview v1 (wrong content type,
not JSON, too deep or too big, wrong kind, no uid) is a 400 saying why, an unexpected
error is logged and answered 500, and either way the server keeps serving. The
decisions themselves are ``mutation``'s; profiles come from a ``ProfileSource`` (the
provider's cache of FargateProfiles, or a fixed list), read afresh for every request.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from vk_fargate import listening
from vk_fargate.admission import mutation
from vk_fargate.fargate import profiles

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MUTATE_PATH = "/mutate-pods"
VALIDATE_PATH = "/validate-profiles"
HEALTH_PATH = "/healthz"
# The API server refuses requests over 3 MiB itself, so no AdmissionReview it sends is
# larger (a pod is at most ~1.5 MiB in etcd; an UPDATE carries two of them).
MAX_BODY = 3 * 1024 * 1024


class ProfileSource(Protocol):
    """Where the webhook reads the cluster's Fargate profiles (``ProfileController`` is one).

    Both are called per request, from the webhooks' own thread (see ``worker``), so they
    must answer from memory, without blocking, and be safe to call from another thread.
    """

    def profiles(self) -> list[profiles.Profile]:
        """The profiles pods may match (``mutation`` uses only the ACTIVE ones)."""

    def count(self) -> int:
        """How many profiles the cluster has, in any state: what the limit counts."""


class AdmissionServer:
    """The webhooks over HTTPS, bound to ``host``:``port`` (0 picks a free port)."""

    def __init__(
        self,
        source: ProfileSource,
        tls: ssl.SSLContext,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scheduler: str = mutation.SCHEDULER,
        max_body: int = MAX_BODY,
    ) -> None:
        self.source = source
        self.tls = tls
        self.host = host
        self.port = port
        self.scheduler = scheduler
        self.max_body = max_body
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=self.max_body)
        app.router.add_get(HEALTH_PATH, self._healthz)
        app.router.add_post(MUTATE_PATH, self._mutate_pods)
        app.router.add_post(VALIDATE_PATH, self._validate_profiles)
        return app

    async def start(self) -> int:
        """Serve; returns the bound port."""
        self._runner, self.port = await listening.serve(
            self.application(), host=self.host, port=self.port, tls=self.tls
        )
        log.info("admission webhooks serving on https://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except mutation.MalformedReview as exc:
            log.info("refused %s %s: %s", request.method, request.path, exc)
            return listening.text(str(exc), 400)
        except (web.HTTPException, ConnectionError):
            raise
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return listening.text("internal error; see the vk-fargate admission log", 500)

    async def _document(self, request: web.Request) -> object:
        """The request body as JSON, or ``MalformedReview`` saying why it is not."""
        if request.content_type != "application/json":
            raise mutation.MalformedReview(
                f"the body must be application/json, not {request.content_type!r}"
            )
        too_big = f"the body is larger than the {self.max_body} bytes an AdmissionReview needs"
        if request.content_length is not None and request.content_length > self.max_body:
            raise mutation.MalformedReview(too_big)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:  # chunked, no Content-Length
            raise mutation.MalformedReview(too_big) from exc
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise mutation.MalformedReview(f"the body is not JSON: {exc}") from exc

    async def _healthz(self, _: web.Request) -> web.StreamResponse:
        return listening.text("ok", 200)

    async def _mutate_pods(self, request: web.Request) -> web.StreamResponse:
        document = await self._document(request)
        reply = mutation.review(document, self.source.profiles(), scheduler=self.scheduler)
        _log_reply(request, reply)
        return web.json_response(reply)

    async def _validate_profiles(self, request: web.Request) -> web.StreamResponse:
        document = await self._document(request)
        reply = mutation.validate_profile(document, self.source.count())
        _log_reply(request, reply)
        return web.json_response(reply)


def _log_reply(request: web.Request, reply: mutation.JSON) -> None:
    response = reply["response"]
    if not response["allowed"]:
        log.info("%s %s: denied: %s", request.path, response["uid"], response["status"]["message"])
    elif "patch" in response:
        log.debug("%s %s: patched", request.path, response["uid"])
