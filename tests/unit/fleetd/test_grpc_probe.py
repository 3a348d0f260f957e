"""The shim's grpc probe against a real gRPC server (grpcio's own health servicer) on
loopback: the kubelet's verdicts and texts."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from vk_fargate.fleetd import grpcprobe, hpack, probes

UA = "kube-probe/1.36"


@pytest.fixture
async def server() -> AsyncIterator[int]:
    """A health server: "" SERVING, "db" NOT_SERVING, nothing else known."""
    running = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, running)
    port = running.add_insecure_port("127.0.0.1:0")
    await running.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("db", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        yield port
    finally:
        await running.stop(0)


async def test_serving_passes(server: int) -> None:
    assert await grpcprobe.probe("127.0.0.1", server, "", 2, UA) == (True, "")


async def test_not_serving_fails_with_the_kubelets_text(server: int) -> None:
    assert await grpcprobe.probe("127.0.0.1", server, "db", 2, UA) == (
        False,
        'service unhealthy (responded with "NOT_SERVING")',
    )


async def test_an_unknown_service_is_a_grpc_error(server: int) -> None:
    ok, text = await grpcprobe.probe("127.0.0.1", server, "nope", 2, UA)
    assert not ok
    assert text.startswith("error: health rpc probe failed: rpc error: code = NotFound desc = ")


async def test_a_server_without_the_health_service() -> None:
    running = grpc.aio.server()
    port = running.add_insecure_port("127.0.0.1:0")
    await running.start()
    try:
        ok, text = await grpcprobe.probe("127.0.0.1", port, "", 2, UA)
    finally:
        await running.stop(0)
    assert (ok, text) == (
        False,
        "error: this server does not implement the grpc health protocol "
        "(grpc.health.v1.Health): Method not found!",
    )


async def test_nothing_listening_is_the_kubelets_connect_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await grpcprobe.probe("127.0.0.1", port, "", 1, UA) == (
        False,
        f'timeout: failed to connect service "127.0.0.1:{port}" within 1s: '
        "context deadline exceeded",
    )


def test_hpack_decodes_rfc_7541s_examples() -> None:
    """C.4: requests with Huffman coding and the dynamic table, one decoder for both."""
    decoder = hpack.Decoder()
    first = decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    assert first == [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]
    second = decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf"))
    assert second == [*first, ("cache-control", "no-cache")]


def test_hpack_encodes_what_it_decodes() -> None:
    fields = [("grpc-status", "0"), ("long", "x" * 300)]
    assert hpack.Decoder().decode(hpack.encode(fields)) == fields


async def test_a_grpc_probe_spec_calls_the_pods_ip(server: int, tmp_path: Path) -> None:
    """As the shim runs a probe of the fleet's spec: to the pod's IP (here loopback)."""
    spec = {"grpc": {"port": server, "service": "db"}, "timeout_seconds": 2}
    assert await probes.run_probe(spec, "127.0.0.1", [], tmp_path / "pid") == (
        False,
        'service unhealthy (responded with "NOT_SERVING")',
    )
