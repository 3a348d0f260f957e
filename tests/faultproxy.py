"""A reverse proxy that breaks the provider's calls to the fleet, on purpose.

The provider claims every fleet call is safe to retry (client-chosen ids, PUT, DELETE)
and that it follows the event stream across breaks. Only a network that fails the way
real ones do tests that: an answer that never reaches the fleet (a 503 from a load
balancer, a connection dropped before forwarding), and the nasty one, a request that
took effect but whose answer is lost. The proxy sits on a loopback port in front of a
fleet URL and does one of these to each request at random (seeded), passes streaming
answers (events, logs) through chunk by chunk and may cut them mid-stream, and counts
what it did, by kind and HTTP method.
"""

from __future__ import annotations

import collections
import dataclasses
import random

import aiohttp
from aiohttp import web

REFUSED = "refused"  # 503 (sometimes with Retry-After), not forwarded
DROPPED = "dropped"  # connection closed before forwarding
REPLY_LOST = "reply-lost"  # forwarded, took effect; connection closed before the answer
CUT = "cut"  # a streaming answer cut mid-stream
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "upgrade"}
# Set again by aiohttp for the body it sends on.
NOT_FORWARDED = {*HOP_BY_HOP, "content-length"}


@dataclasses.dataclass
class Odds:
    """Per request, the chance of each fault (the rest are forwarded faithfully), and per
    chunk of a streaming answer, the chance it is the last one."""

    refuse: float = 0.10
    drop: float = 0.10
    lose_reply: float = 0.10
    cut_chunk: float = 0.05


class FaultProxy:
    """``start`` it, point a client at ``url``, read ``counts``; ``stop`` when done.
    ``by_method`` gives some methods odds of their own."""

    def __init__(
        self,
        upstream: str,
        *,
        odds: Odds | None = None,
        by_method: dict[str, Odds] | None = None,
        seed: int = 14,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.odds = odds or Odds()
        self.by_method = by_method or {}
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.url = ""
        self._random = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def injected(self, kind: str, method: str | None = None) -> int:
        """How many faults of ``kind`` (on requests of ``method``) were injected."""
        return sum(n for (k, m), n in self.counts.items() if k == kind and method in (None, m))

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _count(self, kind: str, request: web.Request) -> None:
        self.counts[kind, request.method] += 1

    def _close(self, kind: str, request: web.Request) -> None:
        """Close the client's connection: aiohttp's write of what the handler returns
        then fails quietly, and the client sees the connection end."""
        self._count(kind, request)
        if request.transport is not None:
            request.transport.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        roll = self._random.random()
        odds = self.by_method.get(request.method, self.odds)
        if roll < odds.refuse:
            self._count(REFUSED, request)
            headers = {"Retry-After": "1"} if self._random.random() < 0.5 else {}
            return web.Response(status=503, text="injected by the fault proxy", headers=headers)
        if roll < odds.refuse + odds.drop:
            self._close(DROPPED, request)
            return web.Response()
        lose_reply = roll < odds.refuse + odds.drop + odds.lose_reply
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + str(request.rel_url),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            if lose_reply:  # the fleet has answered: the request took effect
                self._close(REPLY_LOST, request)
                return web.Response()
            return await self._relay(request, upstream, odds.cut_chunk)

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, cut_chunk: float
    ) -> web.StreamResponse:
        """Pass the answer on as it comes; cut it now and then when it is a stream (no
        length: its end is not known in advance)."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers.add(key, value)
        streaming = upstream.content_length is None
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                if streaming and self._random.random() < cut_chunk:
                    self._close(CUT, request)
                    return response
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away (its stream closed): nothing to pass on
        return response
