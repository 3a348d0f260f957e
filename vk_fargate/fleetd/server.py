"""Running fleetd: open the store, adopt surviving microVMs, listen for shim pings and
serve the API until SIGTERM or SIGINT.

The token comes from ``$VK_FARGATE_FLEET_TOKEN`` or the config's ``token_file`` (made
with a random token when it does not exist yet, mode 0600). On exit the microVMs keep
running and are re-adopted by the next start, unless ``stop_microvms`` is set (the dev
harness and tests), which stops them and removes the bridges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
from pathlib import Path

from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleetd import api, config, daemon, store

log = logging.getLogger(__name__)
SHUTDOWN_SECONDS = 5.0  # how long in-flight requests may run on after a stop


def load_token(cfg: config.FleetConfig) -> str:
    from_env = os.environ.get("VK_FARGATE_FLEET_TOKEN")
    if from_env:
        return from_env.strip()
    if cfg.token_file is None:
        raise errors.ConfigError(
            "no token: set token_file in the config or $VK_FARGATE_FLEET_TOKEN"
        )
    try:
        token = cfg.token_file.read_text().strip()
    except FileNotFoundError:
        cfg.token_file.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(cfg.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    if not token:
        raise errors.ConfigError(f"token file {cfg.token_file} is empty")
    return token


class _Notify(asyncio.DatagramProtocol):
    def __init__(self, fleet: daemon.Fleet) -> None:
        self.fleet = fleet

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.fleet.refresh(data.decode(errors="replace"))


async def _notify_endpoint(fleet: daemon.Fleet) -> asyncio.DatagramTransport:
    path = fleet.notify_socket
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Notify(fleet), sock=sock
    )
    return transport


def _tls(cfg: config.FleetConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    return context


async def serve(
    cfg: config.FleetConfig,
    *,
    stop_microvms: bool = False,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run fleetd until SIGTERM/SIGINT (or ``stop`` is set)."""
    token = load_token(cfg)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.state_dir.chmod(0o700)  # its database and microVM folders hold Secrets' values
    db = store.Store(cfg.state_dir / "fleetd.sqlite3")
    fleet = daemon.Fleet(cfg, db)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    transport = await _notify_endpoint(fleet)
    # Followed logs are endless requests: on shutdown they get a few seconds, not a minute.
    runner = web.AppRunner(
        api.application(fleet, token), handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
    )
    try:
        await fleet.start()
        await runner.setup()
        site = web.TCPSite(runner, cfg.listen_host, cfg.listen_port, ssl_context=_tls(cfg))
        await site.start()
        log.info(
            "fleetd serving on %s (networking %s, limits %s)",
            cfg.listen,
            fleet.networking,
            fleet.limits,
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await fleet.close(stop_microvms=stop_microvms)
        transport.close()
        db.close()
        with contextlib.suppress(FileNotFoundError):
            Path(fleet.notify_socket).unlink()
