"""Port streams: sockets made in another network namespace, the session over one, and
connect errors in Go's words."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vk_fargate.fleetd import portstreams, streams


def test_connect_errors_read_as_go_says_them() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    assert portstreams.go_error(refused) == "connect: connection refused"
    assert portstreams.go_error(TimeoutError()) == "i/o timeout"


async def test_without_a_namespace_the_socket_is_this_hosts() -> None:
    sock = await portstreams.socket_in(None)
    with sock:
        assert sock.family == socket.AF_INET


async def test_a_missing_namespace_is_an_os_error() -> None:
    with pytest.raises(OSError):
        await portstreams.socket_in("/nonexistent/netns")


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of its own, loopback up."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and ip")
    name = f"vkf-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


async def test_a_session_reaches_a_port_only_inside_the_namespace(netns: str) -> None:
    own = Path("/proc/self/ns/net").stat().st_ino
    server = await portstreams.socket_in(netns)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert Path("/proc/self/ns/net").stat().st_ino == own  # the daemon stayed home
    with pytest.raises(ConnectionRefusedError):  # not on this host's loopback
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

    async def answer() -> None:
        conn, _ = await asyncio.get_running_loop().sock_accept(server)
        with conn:
            data = b""
            while chunk := await asyncio.get_running_loop().sock_recv(conn, 1024):
                data += chunk  # until the client's half-close
            await asyncio.get_running_loop().sock_sendall(conn, data.upper())

    server.setblocking(False)
    with server:
        answering = asyncio.create_task(answer(), name="answer")
        session = portstreams.PortSession(netns, port)
        await session.start()
        await session.send(streams.STDIN, b"hello")
        await session.send(streams.CLOSE, bytes((streams.STDIN,)))
        got = [item async for item in session.receive()]
        await session.close()
        await answering
    assert got == [(streams.STDOUT, b"HELLO"), (streams.CLOSE, bytes((streams.STDOUT,)))]


async def test_a_refused_connect_is_the_error_item(netns: str) -> None:
    session = portstreams.PortSession(netns, 1)
    await session.start()
    got = [item async for item in session.receive()]
    with contextlib.suppress(OSError):
        await session.close()
    assert got == [
        (streams.ERROR, streams.failed("dial tcp4 127.0.0.1:1: connect: connection refused"))
    ]


async def test_closing_the_session_closes_the_pods_connection(netns: str) -> None:
    server = await portstreams.socket_in(netns)
    with server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        loop = asyncio.get_running_loop()
        session = portstreams.PortSession(netns, server.getsockname()[1])
        await session.start()
        conn, _ = await loop.sock_accept(server)
        with conn:
            await session.close()
            async with asyncio.timeout(10):
                assert await loop.sock_recv(conn, 1024) == b""  # EOF: the connection ended
