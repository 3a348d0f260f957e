"""kubectl port-forward's kubelet side (vk_fargate/kubelet/portforward.py), end to end on
loopback: a real aiohttp server runs ``serve``, its opener dials real local TCP servers
(an echo server and a banner server) and speaks the port channel over them, and the
client is a SPDY client built from our framer over aiohttp's WebSocket client, acting as
client-go's PortForwarder does (error stream first and half-closed at once, data stream,
reset of the data stream once the pod's side is done, reading the error stream to its
end). Unlike spdystream, this client obeys SPDY's flow control windows, so a transfer
that needs WINDOW_UPDATEs stalls (and fails on its timeout) without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests import gobuild
from vk_fargate.kubelet import portforward, spdy

WHAT = "0b7c8a0e-5f4e-4d55-9d1e-3f1a2b3c4d5e"


class TcpSession:
    """The port channel over a real TCP connection, as fleetd's port sessions speak it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.client_done = asyncio.Event()
        self.closed = False

    async def send(self, channel: int, payload: bytes) -> None:
        if channel == portforward.STDIN:
            self.writer.write(payload)
            await self.writer.drain()
        elif channel == portforward.CLOSE and payload == b"\x00":
            self.writer.write_eof()
            self.client_done.set()

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        while data := await self.reader.read(65536):
            yield portforward.STDOUT, data
        yield portforward.CLOSE, b"\x01"
        await self.client_done.wait()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()  # unsent bytes for a pod that does not read too
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


class FailedSession:
    """A dial that failed: the ERROR channel's JSON, then the end."""

    def __init__(self, error: str) -> None:
        self.error, self.closed = error, False

    async def send(self, channel: int, payload: bytes) -> None:
        pass

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        yield portforward.ERROR, json.dumps({"error": self.error}).encode()

    async def close(self) -> None:
        self.closed = True


@dataclasses.dataclass
class Pod:
    """The loopback 'pod': its ports, the sessions opened to them, the served sockets."""

    echo_port: int
    banner_port: int
    sink_port: int  # accepts and never reads
    sessions: list[TcpSession | FailedSession] = dataclasses.field(default_factory=list)
    served: int = 0  # connections the pod's servers have seen end

    async def open_port(self, port: int) -> portforward.Session:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            session: TcpSession | FailedSession = FailedSession(str(e))
        else:
            session = TcpSession(reader, writer)
        self.sessions.append(session)
        return session


@pytest.fixture
async def pod() -> AsyncIterator[Pod]:
    state: Pod

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()
        finally:
            state.served += 1

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"banner\n")
        writer.close()
        state.served += 1

    sunk: list[asyncio.StreamWriter] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sunk.append(writer)

    servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (echo, banner, sink)]
    state = Pod(*(server.sockets[0].getsockname()[1] for server in servers))
    async with servers[0], servers[1], servers[2]:
        yield state
        for writer in sunk:
            writer.close()


Serve = Callable[..., Awaitable[tuple[str, asyncio.Event]]]


@pytest.fixture
async def kubelet(pod: Pod) -> AsyncIterator[Serve]:
    """Start a server whose /portForward runs ``serve`` with the given options; its URL
    and an event set when ``serve`` returned."""
    runners: list[web.AppRunner] = []

    async def start(**options: object) -> tuple[str, asyncio.Event]:
        ended = asyncio.Event()

        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(protocols=[portforward.SUBPROTOCOL])
            await ws.prepare(request)
            try:
                await portforward.serve(ws, pod.open_port, what=WHAT, **options)  # type: ignore[arg-type]
            finally:
                ended.set()
            return ws

        app = web.Application()
        app.router.add_get("/portForward/{ns}/{pod}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/portForward/ns/pod", ended

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclasses.dataclass(eq=False)
class Stream:
    id: int
    data: asyncio.Queue[bytes | None] = dataclasses.field(default_factory=asyncio.Queue)
    replied: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    reset: int | None = None
    window: int = spdy.DEFAULT_WINDOW

    async def read_all(self) -> bytes:
        out = bytearray()
        while (chunk := await self.data.get()) is not None:
            out += chunk
        return bytes(out)


class Client:
    """A SPDY client over a WebSocket, as client-go's PortForwarder uses one."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.reader, self.writer = spdy.Reader(), spdy.Writer()
        self.lock = asyncio.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id, self.next_request = 1, 0
        self.window = spdy.DEFAULT_WINDOW  # the session's
        self.credit = asyncio.Event()
        self.frames: list[spdy.Frame] = []  # every control frame received
        self.task = asyncio.create_task(self.read(), name="spdy test client")

    async def send(self, *frames: spdy.Frame) -> None:
        async with self.lock:
            await self.ws.send_bytes(b"".join(self.writer.encode(f) for f in frames))

    async def read(self) -> None:
        async for message in self.ws:
            for frame in self.reader.feed(message.data):
                if not isinstance(frame, spdy.Data):
                    self.frames.append(frame)
                match frame:
                    case spdy.Data(sid, data, fin):
                        if data:
                            self.streams[sid].data.put_nowait(data)
                        if fin:
                            self.streams[sid].data.put_nowait(None)
                    case spdy.SynReply(sid):
                        self.streams[sid].replied.set()
                    case spdy.RstStream(sid, status):
                        self.streams[sid].reset = status
                        self.streams[sid].replied.set()
                        self.streams[sid].data.put_nowait(None)
                    case spdy.WindowUpdate(0, delta):
                        self.window += delta
                        self.credit.set()
                    case spdy.WindowUpdate(sid, delta):
                        self.streams[sid].window += delta
                        self.credit.set()

    async def open(self, headers: spdy.Headers, *, fin: bool = False) -> Stream:
        stream = self.streams[self.next_id] = Stream(self.next_id)
        self.next_id += 2
        await self.send(spdy.SynStream(stream.id, headers, fin=fin))
        await stream.replied.wait()
        return stream

    async def forward(self, port: int) -> tuple[Stream, Stream]:
        """client-go's handleConnection: the error stream, half-closed, then data."""
        headers = {"port": [str(port)], "requestid": [str(self.next_request)]}
        self.next_request += 1
        error = await self.open({**headers, "streamtype": ["error"]})
        await self.send(spdy.Data(error.id, fin=True))
        data = await self.open({**headers, "streamtype": ["data"]})
        return error, data

    async def write(self, stream: Stream, data: bytes, *, windows: bool = True) -> None:
        """Send within the windows (spdystream would not wait; we do, to test them)."""
        at = 0
        while at < len(data):
            size = min(len(data) - at, 16384)
            if windows:
                size = min(size, stream.window, self.window)
            if size <= 0:
                self.credit.clear()
                await self.credit.wait()
                continue
            stream.window -= size
            self.window -= size
            await self.send(spdy.Data(stream.id, data[at : at + size]))
            at += size

    async def finish(self, error: Stream, data: Stream) -> str:
        """After the pod's side ended: reset the data stream, read the error stream."""
        await self.send(spdy.RstStream(data.id, spdy.CANCEL))
        return (await error.read_all()).decode()


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Client]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, protocols=[portforward.SUBPROTOCOL]) as ws,
    ):
        assert ws.protocol == portforward.SUBPROTOCOL
        client = Client(ws)
        try:
            yield client
        finally:
            await ws.close()
            await client.task


async def echo_once(client: Client, port: int, payload: bytes) -> bytes:
    error, data = await client.forward(port)
    reading = asyncio.create_task(data.read_all(), name="echo read")
    await client.write(data, payload)
    await client.send(spdy.Data(data.id, fin=True))  # the local socket's EOF
    echoed = await reading
    assert await client.finish(error, data) == ""
    return echoed


async def test_two_ports_at_once_and_a_half_close(kubelet: Serve, pod: Pod) -> None:
    url, ended = await kubelet()
    async with asyncio.timeout(30), connect(url) as client:
        banner_error, banner = await client.forward(pod.banner_port)
        echoed = asyncio.create_task(echo_once(client, pod.echo_port, b"ping\n"), name="echo")
        # the banner server closes first: its bytes, then FIN, while we never wrote
        assert await banner.read_all() == b"banner\n"
        assert await client.finish(banner_error, banner) == ""
        # the echo server answers after our half-close (FIN) reached it as EOF
        assert await echoed == b"ping\n"
        assert [type(f) for f in client.frames[:1]] == [spdy.Settings]
    await ended.wait()
    assert all(s.closed for s in pod.sessions) and len(pod.sessions) == 2


async def test_twenty_concurrent_connections_and_pings(kubelet: Serve, pod: Pod) -> None:
    url, _ = await kubelet()
    payloads = [os.urandom(50_000 + i) for i in range(20)]
    async with asyncio.timeout(60), connect(url) as client:
        results = await asyncio.gather(*(echo_once(client, pod.echo_port, p) for p in payloads))
        await client.send(spdy.Ping(7), spdy.Ping(8))  # 8 would be an answer to our ping
        while spdy.Ping(7) not in client.frames:
            await asyncio.sleep(0.01)
    assert results == payloads
    assert spdy.Ping(8) not in client.frames


async def test_ten_mib_need_window_updates_and_arrive_intact(kubelet: Serve, pod: Pod) -> None:
    url, _ = await kubelet()
    payload = os.urandom(10 << 20)
    async with asyncio.timeout(60), connect(url) as client:
        echoed = await echo_once(client, pod.echo_port, payload)
        updates = [f for f in client.frames if isinstance(f, spdy.WindowUpdate)]
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert sum(u.delta for u in updates if u.stream_id == 0) > len(payload) - (64 << 10)


async def test_a_dial_error_is_written_on_the_error_stream(kubelet: Serve, pod: Pod) -> None:
    url, _ = await kubelet()
    with socket_bound() as closed:  # a port nothing listens on
        async with asyncio.timeout(30), connect(url) as client:
            error, data = await client.forward(closed)
            text = (await error.read_all()).decode()
            assert await data.read_all() == b""  # FIN on the data stream too
    assert text.startswith(f"error forwarding port {closed} to pod {WHAT}, uid : ")
    assert "connect call failed" in text.lower() or "refused" in text.lower()
    assert isinstance(pod.sessions[0], FailedSession) and pod.sessions[0].closed


async def test_an_opener_that_raises_is_a_dial_error(kubelet: Serve, pod: Pod) -> None:
    async def broken(port: int) -> portforward.Session:
        raise RuntimeError(f"microVM has no port {port} yet")

    pod.open_port = broken  # type: ignore[method-assign]
    url, _ = await kubelet()
    async with asyncio.timeout(30), connect(url) as client:
        error, _ = await client.forward(81)
        text = (await error.read_all()).decode()
    assert text == f"error forwarding port 81 to pod {WHAT}, uid : microVM has no port 81 yet"


@contextlib.contextmanager
def socket_bound() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def test_the_client_vanishing_ends_every_task_and_session(kubelet: Serve, pod: Pod) -> None:
    url, ended = await kubelet()
    async with asyncio.timeout(30):
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, protocols=[portforward.SUBPROTOCOL])
        client = Client(ws)
        streams = [await client.forward(pod.echo_port) for _ in range(3)]
        for _, data in streams:
            await client.write(data, b"x" * 100_000)
            assert (await data.data.get() or b"").startswith(b"x")
        assert ws._conn is not None and ws._conn.transport is not None
        ws._conn.transport.abort()  # no close frame, no FIN: gone
        await ended.wait()
        client.task.cancel()
        await asyncio.gather(client.task, return_exceptions=True)
        await http.close()
        while pod.served < 3:  # the pod's sockets see the end of their connections
            await asyncio.sleep(0.01)
    assert len(pod.sessions) == 3 and all(s.closed for s in pod.sessions)
    assert [t.get_name() for t in asyncio.all_tasks() if "port-forward" in t.get_name()] == []


async def test_the_client_vanishing_while_a_pod_does_not_read_ends_it_all(
    kubelet: Serve, pod: Pod, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the WebSocket waits for the pod (back-pressure), so the server cannot see
    the client go; its pings find out."""
    monkeypatch.setattr(portforward, "PROBE", 0.05)
    waiting = asyncio.Event()
    put = portforward._Connection._put

    async def spy(
        self: portforward._Connection, pair: portforward._Pair, piece: bytes | None
    ) -> None:
        if pair.inbound.full():
            waiting.set()
        await put(self, pair, piece)

    monkeypatch.setattr(portforward._Connection, "_put", spy)
    url, ended = await kubelet()
    async with asyncio.timeout(30):
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, protocols=[portforward.SUBPROTOCOL])
        client = Client(ws)
        _, data = await client.forward(pod.sink_port)
        # like spdystream, without windows: only TCP holds the client back
        writing = asyncio.create_task(client.write(data, bytes(64 << 20), windows=False))
        await waiting.wait()
        assert ws._conn is not None and ws._conn.transport is not None
        ws._conn.transport.abort()
        await ended.wait()
        for task in (writing, client.task):
            task.cancel()
        await asyncio.gather(writing, client.task, return_exceptions=True)
        await http.close()
    assert len(pod.sessions) == 1 and all(s.closed for s in pod.sessions)
    assert [t.get_name() for t in asyncio.all_tasks() if "port-forward" in t.get_name()] == []


async def test_streams_over_the_limit_are_refused(kubelet: Serve, pod: Pod) -> None:
    url, _ = await kubelet(max_streams=4)
    async with asyncio.timeout(30), connect(url) as client:
        pairs = [await client.forward(pod.echo_port) for _ in range(2)]
        extra = await client.open({"port": ["1"], "streamtype": ["error"], "requestid": ["9"]})
        assert extra.reset == spdy.REFUSED_STREAM
        assert spdy.Settings({spdy.SETTINGS_MAX_CONCURRENT_STREAMS: 4}) in client.frames
        error, data = pairs[0]  # a pair that ends frees its streams
        await client.send(spdy.Data(data.id, fin=True))
        assert await data.read_all() == b""
        assert await client.finish(error, data) == ""
        again = await client.forward(pod.banner_port)
        assert again[0].reset is None and await again[1].read_all() == b"banner\n"


@pytest.mark.parametrize(
    "headers",
    [
        {"streamtype": ["data"]},
        {"port": ["http"], "streamtype": ["data"]},
        {"port": ["0"], "streamtype": ["data"]},
        {"port": ["80"]},
        {"port": ["80"], "streamtype": ["stdin"]},
    ],
)
async def test_streams_with_bad_headers_are_reset(kubelet: Serve, headers: spdy.Headers) -> None:
    url, _ = await kubelet()
    async with asyncio.timeout(30), connect(url) as client:
        stream = await client.open(headers)
        assert stream.reset == spdy.CANCEL


async def test_a_pair_that_never_completes_times_out(kubelet: Serve, pod: Pod) -> None:
    url, _ = await kubelet(creation_timeout=0.2)
    async with asyncio.timeout(30), connect(url) as client:
        error = await client.open({"port": ["80"], "streamtype": ["error"], "requestid": ["5"]})
        text = (await error.read_all()).decode()
    assert text == f"(conn={WHAT}, request=5) timed out waiting for streams"
    assert pod.sessions == []


async def test_a_protocol_error_ends_the_connection_with_goaway(kubelet: Serve) -> None:
    url, ended = await kubelet()
    async with asyncio.timeout(30), connect(url) as client:
        await client.ws.send_bytes(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
        await client.task  # the server closes the WebSocket
        assert spdy.GoAway(0, spdy.GOAWAY_PROTOCOL_ERROR) in client.frames
    await ended.wait()


async def test_client_go_forwards_through_it(kubelet: Serve, pod: Pod) -> None:
    """The real client: client-go v0.36.3's PortForwarder over its tunneling dialer
    (hack/pfcheck), with real local TCP connections to the ports it listens on."""
    binary = gobuild.checker("pfcheck", timeout=900)
    url, _ = await kubelet()
    payloads = [os.urandom(1 << 20) for _ in range(8)] + [os.urandom(10 << 20)]
    async with forwarding(binary, url, pod.echo_port, pod.banner_port) as (ports, _):
        echo, banner = ports[str(pod.echo_port)], ports[str(pod.banner_port)]
        async with asyncio.timeout(60):
            results = await asyncio.gather(*(tcp_echo(echo, p) for p in payloads))
            assert await tcp_echo(banner, b"") == b"banner\n"
    assert [hashlib.sha256(r).digest() for r in results] == [
        hashlib.sha256(p).digest() for p in payloads
    ]
    assert len(pod.sessions) == len(payloads) + 1 and all(s.closed for s in pod.sessions)


async def test_client_go_reports_a_dial_error(kubelet: Serve, pod: Pod) -> None:
    binary = gobuild.checker("pfcheck", timeout=900)
    url, _ = await kubelet()
    with socket_bound() as closed:
        async with forwarding(binary, url, closed) as (ports, process):
            async with asyncio.timeout(30):
                assert await tcp_echo(ports[str(closed)], b"") == b""
                assert process.stderr is not None
                errors = (await process.stderr.read()).decode()  # it gives up: lost pod
    expected = f"an error occurred forwarding {ports[str(closed)]} -> {closed}: "
    assert f"{expected}error forwarding port {closed} to pod {WHAT}, uid : " in errors


@contextlib.asynccontextmanager
async def forwarding(
    binary: Path, url: str, *remote: int
) -> AsyncIterator[tuple[dict[str, int], asyncio.subprocess.Process]]:
    """pfcheck forwarding local ports to ``remote`` ports; stopped when left."""
    process = await asyncio.create_subprocess_exec(
        str(binary),
        url,
        *map(str, remote),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        assert line, "pfcheck ended before it was ready"
        yield json.loads(line), process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def tcp_echo(port: int, payload: bytes) -> bytes:
    """Send ``payload`` to a local port, half-close, and read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(send(), name="tcp send")
    try:
        return await reader.read()
    finally:
        await sending
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_data_stream_opened_with_fin_half_closes_at_once(kubelet: Serve, pod: Pod) -> None:
    url, _ = await kubelet()
    async with asyncio.timeout(30), connect(url) as client:
        headers = {"port": [str(pod.echo_port)], "requestid": ["0"]}
        error = await client.open({**headers, "streamtype": ["error"]}, fin=True)
        data = await client.open({**headers, "streamtype": ["data"]}, fin=True)
        assert await data.read_all() == b""  # the echo server saw EOF and closed
        assert await client.finish(error, data) == ""
    assert pod.served == 1
