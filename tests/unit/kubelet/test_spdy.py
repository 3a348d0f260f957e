"""The SPDY/3.1 framer (vk_fargate/kubelet/spdy.py) with plain values: every frame type
round trips, bytes may arrive in any split, header compression carries its state from
one frame to the next, and malformed input is a ``ProtocolError``."""

from __future__ import annotations

import struct
import zlib

import pytest

from vk_fargate.kubelet import spdy

FRAMES: list[spdy.Frame] = [
    spdy.SynStream(1, {"streamtype": ["error"], "port": ["8080"], "requestid": ["0"]}),
    spdy.SynStream(3, {"streamtype": ["data"], "port": ["8080"]}, priority=7, fin=True),
    spdy.SynStream(5, {"x": ["a", "b"]}, associated_to=3, unidirectional=True),
    spdy.SynReply(1, {}),
    spdy.SynReply(3, {"status": ["200 OK"]}, fin=True),
    spdy.HeadersFrame(3, {"trailer": ["t"]}, fin=True),
    spdy.Data(3, b"hello"),
    spdy.Data(3, b"", fin=True),
    spdy.Data(0x7FFFFFFF, bytes(range(256)) * 300),
    spdy.RstStream(3, spdy.CANCEL),
    spdy.Settings(
        {spdy.SETTINGS_MAX_CONCURRENT_STREAMS: 128, spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1}
    ),
    spdy.Settings({}, clear=True),
    spdy.Ping(1),
    spdy.GoAway(7, spdy.GOAWAY_PROTOCOL_ERROR),
    spdy.WindowUpdate(0, 32768),
    spdy.WindowUpdate(3, 0x7FFFFFFF),
]


def test_the_dictionary_is_spdy3s() -> None:
    # draft-mbelshe-httpbis-spdy-00 2.6.10.1: 1423 bytes; spdystream's copy has this sum
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b",*,enq=0.")


def test_every_frame_round_trips_in_one_feed() -> None:
    writer, reader = spdy.Writer(), spdy.Reader()
    assert reader.feed(b"".join(writer.encode(f) for f in FRAMES)) == FRAMES


def test_frames_split_byte_by_byte_come_out_whole_and_in_order() -> None:
    writer, reader = spdy.Writer(), spdy.Reader()
    wire = b"".join(writer.encode(f) for f in FRAMES)
    got: list[spdy.Frame] = []
    for i in range(len(wire)):
        got += reader.feed(wire[i : i + 1])
    assert got == FRAMES


def test_header_compression_is_one_stream_across_frames() -> None:
    writer = spdy.Writer()
    first = writer.encode(FRAMES[0])
    again = writer.encode(FRAMES[0])
    # the second block refers back to the first: shorter, and unreadable on its own
    assert len(again) < len(first)
    with pytest.raises(spdy.ProtocolError, match="decompress"):
        spdy.Reader().feed(again)
    reader = spdy.Reader()
    assert reader.feed(first + again) == [FRAMES[0], FRAMES[0]]


def test_a_header_block_as_spdystream_writes_it_decodes() -> None:
    # spdystream: zlib level 9 with the dictionary, one Flush (sync) per block, names
    # lower case, multiple values joined by NUL
    block = struct.pack(">I", 2)
    for name, value in ((b"port", b"80"), (b"streamtype", b"data\x00error")):
        block += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    deflate = zlib.compressobj(9, zdict=spdy.DICTIONARY)
    payload = struct.pack(">IIBB", 3, 0, 0, 0) + deflate.compress(block)
    payload += deflate.flush(zlib.Z_SYNC_FLUSH)
    wire = struct.pack(">HHI", 0x8003, 1, len(payload)) + payload
    assert spdy.Reader().feed(wire) == [
        spdy.SynStream(3, {"port": ["80"], "streamtype": ["data", "error"]})
    ]


def test_unknown_control_frames_are_skipped() -> None:
    unknown = struct.pack(">HHI", 0x8003, 10, 3) + b"abc"  # CREDENTIAL, gone in 3.1
    ping = spdy.Writer().encode(spdy.Ping(3))
    assert spdy.Reader().feed(unknown + ping) == [spdy.Ping(3)]


def control(kind: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8003, kind, flags << 24 | len(payload)) + payload


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (struct.pack(">HHI", 0x8002, 6, 4) + b"\0\0\0\1", "SPDY version 2"),
        (struct.pack(">II", 0, 0), "DATA frame on stream 0"),
        (control(spdy.PING, b"\0\0\0\1\0"), "PING frame of 5 bytes"),
        (control(spdy.RST_STREAM, struct.pack(">II", 0, 1)), "RST_STREAM frame on stream 0"),
        (control(spdy.WINDOW_UPDATE, struct.pack(">II", 1, 0)), "WINDOW_UPDATE of 0"),
        (control(spdy.SETTINGS, struct.pack(">I", 2) + bytes(8)), "SETTINGS of 2 entries"),
        (control(spdy.SYN_STREAM, bytes(6)), "SYN_STREAM frame of 6 bytes"),
        (control(spdy.SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + b"junk"), "decompress"),
        (control(spdy.SYN_REPLY, bytes(4)), "SYN_REPLY frame on stream 0"),
    ],
)
def test_bad_frames_are_protocol_errors(wire: bytes, message: str) -> None:
    with pytest.raises(spdy.ProtocolError, match=message):
        spdy.Reader().feed(wire)


def block_frame(block: bytes) -> bytes:
    deflate = zlib.compressobj(9, zdict=spdy.DICTIONARY)
    body = deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return control(spdy.SYN_REPLY, struct.pack(">I", 1) + body)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (struct.pack(">I", 1) + struct.pack(">I", 9) + b"ab", "ends inside"),
        (struct.pack(">II", 2, 1) + b"a" + struct.pack(">I", 0) + b"\0\0\0\1a\0\0\0\0", "twice"),
        (struct.pack(">II", 1, 0) + struct.pack(">I", 0), "empty name"),
        (struct.pack(">I", 5000), "5000 headers"),
        (struct.pack(">I", 0) + b"extra", "after a header block"),
    ],
)
def test_bad_header_blocks_are_protocol_errors(block: bytes, message: str) -> None:
    with pytest.raises(spdy.ProtocolError, match=message):
        spdy.Reader().feed(block_frame(block))


def test_a_decompression_bomb_is_refused() -> None:
    huge = struct.pack(">II", 1, 4) + b"name" + struct.pack(">I", 2 << 20) + bytes(2 << 20)
    with pytest.raises(spdy.ProtocolError, match="over"):
        spdy.Reader().feed(block_frame(huge))


def test_the_writer_refuses_what_spdy_cannot_carry() -> None:
    with pytest.raises(ValueError, match="no DATA frame"):
        spdy.Writer().encode(spdy.Data(0, b"x"))
    with pytest.raises(ValueError, match="no DATA frame"):
        spdy.Writer().encode(spdy.Data(1, bytes(spdy.MAX_LENGTH + 1)))
