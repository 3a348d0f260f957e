"""TCP relays from a subnet's gateway to the cluster's API server, so that a pod reaches
``KUBERNETES_SERVICE_HOST:PORT`` from inside its network namespace.

A pod's namespace has one way out: its veth to the subnet's bridge, whose only
address on the host is the gateway's. Nothing else of the host (its loopback, where
a local API server listens) nor any other network is routed from there, and that
stays so. For each service route of a microVM the namespace gets one DNAT rule,
``cluster_ip:port`` -> ``gateway:relay port``; on the host, a relay listening on the
gateway address (never on any other) passes the bytes to the route's endpoint and
back. TLS stays end to end: the pod verifies the API server's certificate for the
Service's cluster IP, as it would behind kube-proxy.

The relay port is derived from the endpoint, so the rule in a namespace that outlives
a restart of the daemon still points at the relay the new daemon opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import zlib

log = logging.getLogger(__name__)

PORT_BASE = 17000
PORT_SPAN = 1000  # relay ports are PORT_BASE .. PORT_BASE + PORT_SPAN - 1
CHUNK = 64 * 1024


def relay_port(endpoint: str) -> int:
    """The gateway port that relays to ``endpoint`` (``host:port``), the same in every
    daemon run."""
    return PORT_BASE + zlib.crc32(endpoint.encode()) % PORT_SPAN


def split(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as (host, port); ValueError when malformed."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host)  # an address, never a name to resolve
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class Relays:
    """The daemon's relays, one per (gateway, endpoint), opened on first use."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, str], asyncio.Server] = {}
        self._lock = asyncio.Lock()

    async def ensure(self, gateway: str, endpoint: str) -> int:
        """Listen on ``gateway`` for ``endpoint``; the port (OSError if it is taken)."""
        port = relay_port(endpoint)
        async with self._lock:
            if (gateway, endpoint) not in self._servers:
                target = split(endpoint)
                self._servers[gateway, endpoint] = await asyncio.start_server(
                    lambda r, w: self._relay(r, w, target), gateway, port
                )
                log.info("relaying %s:%d to %s", gateway, port, endpoint)
        return port

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError as exc:
            log.warning("relay to %s:%d: %s", target[0], target[1], exc)
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()
