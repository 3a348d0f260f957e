"""Serving an aiohttp application on a host and port (0 picks a free one) with TLS.

The kubelet API and the admission webhooks both need the bound port back (a node
advertises it; a test picks a free one) and a clear error naming the address when it
cannot be bound, so they share this; the kubelet API adds a site per virtual node.
"""

from __future__ import annotations

import socket
import ssl

from aiohttp import web

from vk_fargate import errors


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host``:``port``; ``ConfigError`` names a busy address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


async def add_site(
    runner: web.AppRunner, *, host: str, port: int, tls: ssl.SSLContext | None
) -> tuple[web.SockSite, int]:
    """One more address for a running ``runner``: the site (to ``stop``) and its port."""
    sock = bind(host, port)
    site = web.SockSite(runner, sock, ssl_context=tls)
    try:
        await site.start()
    except BaseException:
        sock.close()
        raise
    return site, sock.getsockname()[1]


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    handler_cancellation: bool = False,
) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; the runner (to ``cleanup``) and the bound port."""
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        _, bound = await add_site(runner, host=host, port=port, tls=tls)
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


def text(message: str, status: int) -> web.Response:
    """A plain-text answer (errors of the kubelet API and the webhooks)."""
    return web.Response(text=message, status=status, content_type="text/plain")
