"""The shim's httpGet and tcpSocket handlers against real sockets on loopback: the
kubelet's request, its verdicts and its failure texts."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vk_fargate import pki
from vk_fargate.fleetd import probehandlers

Answer = Callable[[str], bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[str], list[Answer]]]:
    """A server answering each request with ``answers[0](path)``; ``seen`` its requests."""
    seen: list[str] = []
    answers: list[Answer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head)
        path = head.split()[1]
        writer.write(answers[0](path))
        await writer.drain()
        writer.close()

    running = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = running.sockets[0].getsockname()[1]
    async with running:
        yield port, seen, answers


def status(code: int, location: str | None = None) -> bytes:
    extra = f"Location: {location}\r\n" if location else ""
    return f"HTTP/1.1 {code} X\r\n{extra}Content-Length: 2\r\n\r\nok".encode()


async def test_a_2xx_passes_with_the_kubelets_user_agent_and_headers(
    server: tuple[int, list[str], list[Answer]],
) -> None:
    port, seen, answers = server
    answers.append(lambda path: status(200))
    result = await probehandlers.http_probe("http", "127.0.0.1", port, "healthz", [("X-A", "b")], 1)
    assert result == (True, "")
    lines = seen[0].split("\r\n")
    assert lines[0] == "GET /healthz HTTP/1.1"
    assert "User-Agent: kube-probe/1.36" in lines
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "X-A: b" in lines


async def test_a_500_fails_with_the_kubelets_text(
    server: tuple[int, list[str], list[Answer]],
) -> None:
    port, _, answers = server
    answers.append(lambda path: status(500))
    result = await probehandlers.http_probe("http", "127.0.0.1", port, "/", [], 1)
    assert result == (False, "HTTP probe failed with statuscode: 500")


async def test_a_redirect_is_followed_on_the_same_host_only(
    server: tuple[int, list[str], list[Answer]],
) -> None:
    port, seen, answers = server
    answers.append(lambda path: status(302, "/final") if path == "/start" else status(503))
    result = await probehandlers.http_probe("http", "127.0.0.1", port, "/start", [], 1)
    assert result == (False, "HTTP probe failed with statuscode: 503")
    assert [s.split()[1] for s in seen] == ["/start", "/final"]
    answers[0] = lambda path: status(301, "http://elsewhere.invalid/")
    assert await probehandlers.http_probe("http", "127.0.0.1", port, "/", [], 1) == (True, "")


async def test_no_answer_in_time_fails_as_gos_client_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    running = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = running.sockets[0].getsockname()[1]
    async with running:
        ok, text = await probehandlers.http_probe("http", "127.0.0.1", port, "/x", [], 0.2)
    assert not ok
    assert text == (
        f'Get "http://127.0.0.1:{port}/x": context deadline exceeded '
        "(Client.Timeout exceeded while awaiting headers)"
    )


async def test_a_closed_port_is_connection_refused_in_gos_words() -> None:
    port = _free_port()
    ok, text = await probehandlers.http_probe("http", "127.0.0.1", port, "/x", [], 1)
    assert (ok, text) == (
        False,
        f'Get "http://127.0.0.1:{port}/x": dial tcp 127.0.0.1:{port}: connect: connection refused',
    )
    assert await probehandlers.tcp_probe("127.0.0.1", port, 1) == (
        False,
        f"dial tcp 127.0.0.1:{port}: connect: connection refused",
    )


async def test_tcp_passes_when_it_connects(
    server: tuple[int, list[str], list[Answer]],
) -> None:
    port, _, _ = server
    assert await probehandlers.tcp_probe("127.0.0.1", port, 1) == (True, "")


async def test_https_is_not_verified_as_the_kubelets(tmp_path: Path) -> None:
    """A self-signed certificate no one trusts, for another name: the probe passes."""
    pair = pki.self_signed(("elsewhere.invalid",), "probed")
    (tmp_path / "cert.pem").write_bytes(pair.cert)
    (tmp_path / "key.pem").write_bytes(pair.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(status(204))
        await writer.drain()
        writer.close()

    running = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = running.sockets[0].getsockname()[1]
    async with running:
        assert await probehandlers.http_probe("https", "127.0.0.1", port, "/", [], 2) == (True, "")
