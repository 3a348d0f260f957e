"""The shim's attach framing and a session's bounded output (``fleetd.attach``), and
which specs only process hosts take (``daemon._process_only``)."""

from __future__ import annotations

import asyncio
import json

from vk_fargate.fleet import models
from vk_fargate.fleetd import attach, attachwire, daemon, streams


async def test_frames_read_back_as_written() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(
        attachwire.encode(streams.STDIN, b"abc") + attachwire.encode(streams.CLOSE, b"\0")
    )
    reader.feed_eof()
    assert await attachwire.read_frame(reader) == (streams.STDIN, b"abc")
    assert await attachwire.read_frame(reader) == (streams.CLOSE, b"\0")
    assert await attachwire.read_frame(reader) is None


async def test_a_frame_over_the_limit_ends_the_stream() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(attachwire.HEADER.pack(streams.STDIN, attachwire.MAX_FRAME + 1))
    reader.feed_eof()
    assert await attachwire.read_frame(reader) is None


class _Sink:
    """A StreamWriter stand-in that keeps what is written."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


async def _frames(data: bytes) -> list[tuple[int, bytes]]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    found = []
    while (frame := await attachwire.read_frame(reader)) is not None:
        found.append(frame)
    return found


async def test_a_session_that_falls_behind_loses_output_but_gets_its_end() -> None:
    sink = _Sink()
    session = attach._Session(sink)  # type: ignore[arg-type]
    chunk = b"x" * (attach.SESSION_BUFFER // 4)
    for _ in range(6):  # nobody sends meanwhile: the last two do not fit
        session.put(streams.STDOUT, chunk)
    session.end(3)
    await session.send()
    frames = await _frames(sink.data)
    assert [c for c, _ in frames] == [streams.STDOUT] * 4 + [streams.ERROR]
    assert json.loads(frames[-1][1]) == {"exit_code": 3}
    assert sink.closed


def test_stdin_and_tty_run_on_process_hosts_only() -> None:
    def spec(**fields: bool) -> models.MicroVMSpec:
        container = models.Container(name="app", image="busybox", **fields)
        return models.MicroVMSpec(vcpu_millis=250, mem_mib=512, containers=[container])

    assert daemon._process_only(spec()) is None
    assert daemon._process_only(spec(stdin=True)) == "stdin/tty"
    assert daemon._process_only(spec(tty=True)) == "stdin/tty"
