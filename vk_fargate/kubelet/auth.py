"""Who may call the kubelet API, decided as kubelet decides it.

Authentication: a client certificate signed by the client CA (``certauth``: user =
CN, groups = O), else an ``Authorization: Bearer`` token sent to the API server in a
TokenReview. Anonymous callers, and a certificate from another CA without a token, are
refused (401). Authorization: a SubjectAccessReview
per request on ``nodes/<node>``, the subresource taken from the path (``log``,
``stats``, ...); where kubelet does a fine-grained check first, a denial falls back to
``proxy``. Decisions are cached like kubelet's webhooks (allowed 5 min, denied 30 s,
tokens 2 min) so streaming many log requests does not flood the API server.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from aiohttp import web
from cryptography import x509

from vk_fargate import errors
from vk_fargate.k8s import kube, reviews
from vk_fargate.kubelet import certauth

log = logging.getLogger(__name__)

# Who asks, as the middleware authenticated them, for the handlers to authorize.
IDENTITY: web.RequestKey[reviews.Identity] = web.RequestKey("identity", reviews.Identity)
ALLOWED_TTL = 300.0  # kubelet --authorization-webhook-cache-authorized-ttl
DENIED_TTL = 30.0  # kubelet --authorization-webhook-cache-unauthorized-ttl
TOKEN_TTL = 120.0  # kubelet --authentication-token-webhook-cache-ttl
BAD_TOKEN_TTL = 10.0  # a rejected token is asked about again soon
CACHE_SIZE = 10_000
AUTHENTICATED = "system:authenticated"

# Paths whose subresource is not ``proxy`` (kubelet's table, fine-grained authz on), in
# the order they are checked. ``/containerLogs`` is checked as ``log`` first: reading a
# pod's logs is what ``nodes/log`` is for, and ``proxy`` (kubelet's rule) still works.
SUBRESOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/containerLogs", ("log", "proxy")),
    ("/logs", ("log",)),
    ("/stats", ("stats",)),
    ("/metrics", ("metrics",)),
    ("/spec", ("spec",)),
    ("/checkpoint", ("checkpoint",)),
    ("/pods", ("pods", "proxy")),
    ("/runningpods", ("pods", "proxy")),
    ("/healthz", ("healthz", "proxy")),
    ("/configz", ("configz", "proxy")),
)
VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


class AuthError(errors.VkFargateError):
    """A request was refused before reaching its handler; ``status`` says how."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(AuthError):
    status = 401


class Forbidden(AuthError):
    status = 403


class ReviewUnavailable(AuthError):
    """The API server could not answer a review: not knowing is not refusing."""

    status = 503


def subresources(path: str) -> tuple[str, ...]:
    """The ``nodes`` subresources that allow ``path``, checked in order."""
    for prefix, names in SUBRESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return names
    return ("proxy",)


def verb(method: str) -> str:
    return VERBS.get(method.upper(), method.lower())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    parts = (authorization or "").strip().split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


def _authenticated(identity: reviews.Identity) -> reviews.Identity:
    """Every authenticated user is in ``system:authenticated``, as in Kubernetes."""
    if AUTHENTICATED in identity.groups:
        return identity
    return reviews.Identity(
        identity.user, (*identity.groups, AUTHENTICATED), identity.uid, identity.extra
    )


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A bounded map whose entries expire; the oldest go first when it is full."""

    def __init__(self, clock: Callable[[], float], size: int = CACHE_SIZE) -> None:
        self._clock = clock
        self._size = size
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry[0] <= self._clock():
            del self._entries[key]
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._size:
            now = self._clock()
            for stale in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
                del self._entries[stale]
            while len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + ttl, value)


class Guard:
    """Authenticates and authorizes kubelet API requests against one cluster."""

    def __init__(
        self,
        api: kube.Kube,
        *,
        allowed_ttl: float = ALLOWED_TTL,
        denied_ttl: float = DENIED_TTL,
        token_ttl: float = TOKEN_TTL,
        clock: Callable[[], float] = time.monotonic,
        client_cas: Sequence[x509.Certificate] = (),
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.client_cas = tuple(client_cas)
        self.wall_clock = wall_clock
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self.token_ttl = token_ttl
        self._tokens: TTLCache[bytes, reviews.Identity | None] = TTLCache(clock)
        self._decisions: TTLCache[tuple[reviews.Identity, str, str, str], bool] = TTLCache(clock)
        self.reviews = 0  # TokenReviews and SubjectAccessReviews sent, to see the caches work

    async def authenticate(
        self, *, certificate: bytes | None, authorization: str | None
    ) -> reviews.Identity:
        """The caller: its client certificate (DER) if the client CA signed it, else
        its bearer token."""
        rejected = None
        if certificate:
            try:
                return _authenticated(
                    certauth.identity(certificate, self.client_cas, self.wall_clock())
                )
            except certauth.Rejected as exc:
                rejected = str(exc)
        token = bearer_token(authorization)
        if token is None:
            if rejected is not None:
                raise Unauthenticated(f"Unauthorized: the client certificate: {rejected}")
            raise Unauthenticated(
                "Unauthorized: present a client certificate signed by the cluster CA "
                "or an Authorization: Bearer token"
            )
        key = hashlib.sha256(token.encode()).digest()
        cached, found = self._tokens.get(key)
        if not cached:
            self.reviews += 1
            try:
                found = await reviews.token_review(self.api, token)
            except errors.KubeError as exc:
                log.warning("TokenReview failed: %s", exc)
                raise ReviewUnavailable(f"cannot verify the bearer token now: {exc}") from exc
            self._tokens.put(key, found, self.token_ttl if found else BAD_TOKEN_TTL)
        if found is None:
            raise Unauthenticated("Unauthorized: the API server did not accept the bearer token")
        return _authenticated(found)

    async def authorize(
        self, identity: reviews.Identity, *, node: str, path: str, method: str = "GET"
    ) -> None:
        """Raise ``Forbidden`` unless ``identity`` may reach ``path`` on ``node``.

        An empty ``node`` asks about every node (for requests no single node owns).
        """
        action = verb(method)
        names = subresources(path)
        for subresource in names:
            key = (identity, action, subresource, node)
            cached, allowed = self._decisions.get(key)
            if not cached:
                self.reviews += 1
                try:
                    allowed = await reviews.access_review(
                        self.api,
                        identity,
                        verb=action,
                        resource="nodes",
                        subresource=subresource,
                        name=node,
                    )
                except errors.KubeError as exc:
                    log.warning("SubjectAccessReview failed: %s", exc)
                    raise ReviewUnavailable(f"cannot authorize the request now: {exc}") from exc
                self._decisions.put(key, allowed, self.allowed_ttl if allowed else self.denied_ttl)
            if allowed:
                return
        raise Forbidden(
            f"Forbidden (user={identity.user}, verb={action}, resource=nodes, "
            f"subresource={' or '.join(names)}, name={node or '<all nodes>'})"
        )
