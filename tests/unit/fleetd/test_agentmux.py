"""agentmux's framing and flow control, against a fake agent on a real Unix socket (the
real guest agent is tested in tests/fleetd/test_microvm_streams.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vk_fargate.fleetd import agentmux, sandbox, streams

SPEC: sandbox.ShimSpec = {  # type: ignore[typeddict-item]  # only what agentmux reads
    "id": "vm-1",
    "init_containers": [{"name": "setup"}],
    "containers": [{"name": "app"}],
}


def test_frames_round_trip_through_any_split() -> None:
    frames = [(1, b"\x80{}"), (0, b"H12345678"), (7, b"\x01" + bytes(agentmux.MAX_PAYLOAD - 1))]
    stream = b"".join(agentmux.encode(s, p) for s, p in frames)
    for step in (1, 5, 8, 9, 4096, len(stream)):
        decoder = agentmux.Decoder()
        got = []
        for at in range(0, len(stream), step):
            got += decoder.feed(stream[at : at + step])
        assert got == frames


def test_oversized_frames_are_refused_both_ways() -> None:
    with pytest.raises(agentmux.ProtocolError):
        agentmux.encode(1, bytes(agentmux.MAX_PAYLOAD + 1))
    with pytest.raises(agentmux.ProtocolError):
        agentmux.Decoder().feed(agentmux.HEADER.pack(1, agentmux.MAX_PAYLOAD + 1))


class FakeAgent:
    """Serves ``agent.sock`` as the guest agent does: echoes HELLO (after a stale frame
    of an earlier host), then records what each session sends."""

    def __init__(self, vm_dir: Path) -> None:
        self.path = vm_dir / agentmux.SOCKET
        self.frames: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def __aenter__(self) -> FakeAgent:
        self.server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        if self.writer is not None:
            self.writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connections += 1
        decoder = agentmux.Decoder()
        while data := await reader.read(65536):
            for session, payload in decoder.feed(data):
                if session == 0:
                    writer.write(agentmux.encode(5, b"\x01stale output of an earlier host"))
                    writer.write(agentmux.encode(0, payload))
                else:
                    await self.frames.put((session, payload))

    def send(self, session: int, payload: bytes) -> None:
        assert self.writer is not None
        self.writer.write(agentmux.encode(session, payload))


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[FakeAgent]:
    async with FakeAgent(tmp_path) as fake:
        yield fake
    await agentmux.disconnect(tmp_path)


async def test_an_exec_opens_by_index_and_ends_with_the_error_channel(
    agent: FakeAgent, tmp_path: Path
) -> None:
    session = await agentmux.open_exec(tmp_path, SPEC, "app", ["id"], stdin=False, tty=True)
    sid, payload = await agent.frames.get()
    assert payload[0] == agentmux.OPEN
    opened = json.loads(payload[1:])
    assert opened == {"kind": "exec", "index": 1, "command": ["id"], "stdin": False, "tty": True}
    items = aiter(session.receive())
    agent.send(sid, streams.frame(streams.STDOUT, b"uid=0"))
    assert await anext(items) == (streams.STDOUT, b"uid=0")
    following = asyncio.create_task(anext(items), name="test-next")  # acknowledges 5 bytes
    assert await agent.frames.get() == (sid, bytes((agentmux.ACK,)) + (5).to_bytes(4, "big"))
    agent.send(sid, streams.frame(streams.ERROR, b'{"exit_code":0}'))  # Go's spacing
    agent.send(sid, bytes((agentmux.END,)))
    assert await following == (streams.ERROR, streams.exited(0))
    assert [item async for item in items] == []
    await session.close()  # after the end: nothing sent
    assert agent.frames.empty()


async def test_stdin_waits_for_credit(agent: FakeAgent, tmp_path: Path) -> None:
    session = await agentmux.open_port(tmp_path, SPEC, 8080)
    sid, payload = await agent.frames.get()
    assert json.loads(payload[1:]) == {"kind": "port", "port": 8080}
    data = bytes(range(256)) * (agentmux.WINDOW // 256 + 100)  # a window and a bit
    sending = asyncio.create_task(session.send(streams.STDIN, data), name="test-send")
    got = bytearray()
    while len(got) < agentmux.WINDOW:
        _, payload = await agent.frames.get()
        assert payload[0] == streams.STDIN and len(payload) <= agentmux.MAX_PAYLOAD
        got += payload[1:]
    assert len(got) == agentmux.WINDOW and not sending.done()
    assert agent.frames.empty()
    agent.send(sid, bytes((agentmux.ACK,)) + len(got).to_bytes(4, "big"))
    await sending
    while len(got) < len(data):
        got += (await agent.frames.get())[1][1:]
    assert bytes(got) == data
    await session.close()
    assert await agent.frames.get() == (sid, bytes((agentmux.END,)))


async def test_a_lost_connection_ends_its_sessions_and_the_next_open_reconnects(
    agent: FakeAgent, tmp_path: Path
) -> None:
    session = await agentmux.open_exec(tmp_path, SPEC, "app", ["sh"], stdin=True, tty=False)
    await agent.frames.get()
    assert agent.writer is not None
    agent.writer.close()
    got = [item async for item in session.receive()]
    assert len(got) == 1 and got[0][0] == streams.ERROR
    assert "guest agent" in json.loads(got[0][1])["error"]
    await session.send(streams.STDIN, b"ignored")  # no error: the session is over
    again = await agentmux.open_exec(tmp_path, SPEC, "setup", ["true"], stdin=False, tty=False)
    assert json.loads((await agent.frames.get())[1][1:])["index"] == 0
    await again.close()


async def test_sessions_opened_at_once_share_one_connection(
    agent: FakeAgent, tmp_path: Path
) -> None:
    sessions = await asyncio.gather(*(agentmux.open_port(tmp_path, SPEC, p) for p in (1, 2, 3)))
    opened = [await agent.frames.get() for _ in sessions]
    assert agent.connections == 1
    assert sorted(json.loads(p[1:])["port"] for _, p in opened) == [1, 2, 3]
    assert len({sid for sid, _ in opened}) == 3
    for session in sessions:
        await session.close()


async def test_no_socket_means_no_agent(tmp_path: Path) -> None:
    with pytest.raises(agentmux.AgentUnavailable, match="no guest agent"):
        await agentmux.open_port(tmp_path, SPEC, 80)
    with pytest.raises(LookupError):
        await agentmux.open_exec(tmp_path, SPEC, "nope", ["true"], stdin=False, tty=False)


class DeepAgent(FakeAgent):
    """A fake agent whose socket path is too long to bind: bound from inside its folder
    (as QEMU binds it, from the VM's directory)."""

    async def __aenter__(self) -> FakeAgent:
        assert len(str(self.path)) > agentmux.SUN_PATH_MAX
        here = Path.cwd()
        os.chdir(self.path.parent)
        try:
            self.server = await asyncio.start_unix_server(self._serve, self.path.name)
        finally:
            os.chdir(here)
        return self


async def test_a_long_vm_path_is_reached_through_proc(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    async with DeepAgent(deep) as fake:
        session = await agentmux.open_port(deep, SPEC, 1)
        assert json.loads((await fake.frames.get())[1][1:]) == {"kind": "port", "port": 1}
        await session.close()
    await agentmux.disconnect(deep)
