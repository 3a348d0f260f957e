"""SPDY/3.1 frames, as ``kubectl port-forward`` still speaks them inside a WebSocket.

kubectl 1.36 reaches ``/portForward/{ns}/{pod}`` with a WebSocket whose subprotocol is
``SPDY/3.1+portforward.k8s.io`` (client-go tools/portforward tunneling_dialer.go): every
binary message carries bytes of one SPDY/3.1 session (message boundaries are not frame
boundaries; TunnelingConnection is a plain byte pipe, and the kubelet's tunneling handler,
apiserver pkg/util/proxy/streamtunnel.go, hands those bytes to an ordinary SPDY server).
This module is that session's framing, pure (no I/O): ``Reader`` parses fed bytes into
frames, ``Writer`` encodes them.

The wire format (SPDY/3.1 draft, as github.com/moby/spdystream/spdy reads and writes it):

- control frame: ``1|version(15)=3 | type(16) | flags(8) | length(24) | payload``;
  data frame: ``0|stream-id(31) | flags(8) (FIN=1) | length(24) | data``.
- SYN_STREAM (1): stream id, associated stream id, priority (3 bits) and slot, then a
  header block; flags FIN (1), UNIDIRECTIONAL (2). SYN_REPLY (2) and HEADERS (8): stream
  id, header block; flag FIN. RST_STREAM (3): stream id, status. SETTINGS (4): count,
  then (flags(8) id(24) value(32)) entries. PING (6): id (peers answer the other side's
  ids: odd from the client). GOAWAY (7): last good stream id, status. WINDOW_UPDATE (9):
  stream id (0 is the whole session in 3.1), delta.
- header blocks: ``count(32)`` then ``len(32) name len(32) value`` pairs, names lower
  case, several values joined by NUL; compressed with zlib primed with SPDY/3's fixed
  dictionary, one zlib stream per direction for the whole connection (each block ends
  with a sync flush), so blocks must be decompressed in order, never skipped.

spdystream refuses unknown control frame types (its connection ends), so ``Writer`` only
writes the eight above; ``Reader`` ignores unknown types as the draft asks.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
MAX_LENGTH = 0xFFFFFF  # a frame's payload: 24 bits
MAX_HEADER_BLOCK = 1 << 20  # decompressed, as spdystream's field limit
MAX_HEADERS = 1000

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

# RST_STREAM statuses
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION = 1, 2, 3, 4
CANCEL, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_IN_USE = 5, 6, 7, 8
STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 9, 11
# GOAWAY statuses
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
# SETTINGS ids
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 4, 7
DEFAULT_WINDOW = 64 * 1024

_WORDS_TEXT = (  # the dictionary's length-prefixed words
    "options,head,post,put,delete,trace,accept,accept-charset,accept-encoding,"
    "accept-language,accept-ranges,age,allow,authorization,cache-control,connection,"
    "content-base,content-encoding,content-language,content-length,content-location,"
    "content-md5,content-range,content-type,date,etag,expect,expires,from,host,"
    "if-match,if-modified-since,if-none-match,if-range,if-unmodified-since,"
    "last-modified,location,max-forwards,pragma,proxy-authenticate,proxy-authorization,"
    "range,referer,retry-after,server,te,trailer,transfer-encoding,upgrade,user-agent,"
    "vary,via,warning,www-authenticate,method,get,status,200 OK,version,HTTP/1.1,url,"
    "public,set-cookie,keep-alive,origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
    "charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    """SPDY/3's zlib dictionary (1423 bytes): length-prefixed words, then a tail."""
    return (
        b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS_TEXT.split(","))
        + _TAIL.encode()
    )


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer broke SPDY/3.1; the session cannot go on (send GOAWAY and close)."""


@dataclasses.dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclasses.dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclasses.dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclasses.dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclasses.dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclasses.dataclass(frozen=True)
class Settings:
    values: dict[int, int]  # id -> value (per-entry flags are not kept)
    clear: bool = False


@dataclasses.dataclass(frozen=True)
class Ping:
    id: int


@dataclasses.dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclasses.dataclass(frozen=True)
class WindowUpdate:
    stream_id: int  # 0: the session's window
    delta: int


Frame = (
    Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate
)


def _encode_block(headers: Headers) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        key, value = name.lower().encode(), "\x00".join(values).encode()
        out += [struct.pack(">I", len(key)), key, struct.pack(">I", len(value)), value]
    return b"".join(out)


def _decode_block(block: bytes) -> Headers:
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(block):
            raise ProtocolError("a header block ends inside a name or value")
        at += n
        return block[at - n : at]

    (count,) = struct.unpack(">I", take(4))
    if count > MAX_HEADERS:
        raise ProtocolError(f"a header block of {count} headers (at most {MAX_HEADERS})")
    headers: Headers = {}
    for _ in range(count):
        name = take(struct.unpack(">I", take(4))[0]).decode("utf-8", "replace").lower()
        value = take(struct.unpack(">I", take(4))[0]).decode("utf-8", "replace")
        if not name:
            raise ProtocolError("a header with an empty name")
        if name in headers:
            raise ProtocolError(f"header {name!r} twice in one block")
        headers[name] = value.split("\x00")
    if at != len(block):
        raise ProtocolError("bytes after a header block's last header")
    return headers


class Reader:
    """Frames from a byte stream fed in pieces of any size (one per connection)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes; a partial frame waits for more bytes."""
        self._buffer += data
        frames: list[Frame] = []
        at, buffer = 0, self._buffer
        while len(buffer) - at >= 8:
            end = at + 8 + int.from_bytes(buffer[at + 5 : at + 8], "big")
            if len(buffer) < end:
                break
            frame = self._frame(bytes(buffer[at : at + 8]), bytes(buffer[at + 8 : end]))
            at = end
            if frame is not None:
                frames.append(frame)
        del buffer[:at]
        return frames

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as e:
            raise ProtocolError(f"a header block does not decompress: {e}") from e
        if len(raw) > MAX_HEADER_BLOCK or self._inflate.unconsumed_tail:
            raise ProtocolError(f"a header block over {MAX_HEADER_BLOCK} bytes")
        return _decode_block(raw)

    def _frame(self, head: bytes, payload: bytes) -> Frame | None:
        word, flags = int.from_bytes(head[:4], "big"), head[4]
        if not word & 0x80000000:
            if word == 0:
                raise ProtocolError("a DATA frame on stream 0")
            return Data(word, payload, bool(flags & FLAG_FIN))
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version}, not {VERSION}")
        fin = bool(flags & FLAG_FIN)
        if kind == SYN_STREAM:
            _need(payload, 10, "SYN_STREAM", exact=False)
            stream_id, associated = _id(payload, 0), _id(payload, 4)
            _nonzero(stream_id, "SYN_STREAM")
            return SynStream(
                stream_id,
                self._headers(payload[10:]),
                associated,
                payload[8] >> 5,
                fin,
                bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if kind in (SYN_REPLY, HEADERS):
            name = "SYN_REPLY" if kind == SYN_REPLY else "HEADERS"
            _need(payload, 4, name, exact=False)
            stream_id = _nonzero(_id(payload, 0), name)
            if kind == SYN_REPLY:
                return SynReply(stream_id, self._headers(payload[4:]), fin)
            return HeadersFrame(stream_id, self._headers(payload[4:]), fin)
        if kind == RST_STREAM:
            _need(payload, 8, "RST_STREAM")
            return RstStream(_nonzero(_id(payload, 0), "RST_STREAM"), _u32(payload, 4))
        if kind == SETTINGS:
            _need(payload, 4, "SETTINGS", exact=False)
            count = _u32(payload, 0)
            if len(payload) != 4 + 8 * count:
                raise ProtocolError(f"SETTINGS of {count} entries in {len(payload)} bytes")
            values = {
                _u32(payload, 4 + 8 * i) & 0xFFFFFF: _u32(payload, 8 + 8 * i) for i in range(count)
            }
            return Settings(values, bool(flags & 0x01))
        if kind == PING:
            _need(payload, 4, "PING")
            return Ping(_u32(payload, 0))
        if kind == GOAWAY:
            _need(payload, 8, "GOAWAY")
            return GoAway(_id(payload, 0), _u32(payload, 4))
        if kind == WINDOW_UPDATE:
            _need(payload, 8, "WINDOW_UPDATE")
            delta = _id(payload, 4)
            if delta == 0:
                raise ProtocolError("a WINDOW_UPDATE of 0")
            return WindowUpdate(_id(payload, 0), delta)
        return None  # unknown control frames are ignored (draft 3.1, 2.2.1)


def _u32(payload: bytes, at: int) -> int:
    return int.from_bytes(payload[at : at + 4], "big")


def _id(payload: bytes, at: int) -> int:
    return _u32(payload, at) & 0x7FFFFFFF


def _nonzero(stream_id: int, name: str) -> int:
    if stream_id == 0:
        raise ProtocolError(f"a {name} frame on stream 0")
    return stream_id


def _need(payload: bytes, size: int, name: str, *, exact: bool = True) -> None:
    if len(payload) < size or (exact and len(payload) != size):
        raise ProtocolError(f"a {name} frame of {len(payload)} bytes")


class Writer:
    """Bytes of frames, in order (one per connection: header compression is stateful)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=DICTIONARY)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, fin):
                if not 0 < stream_id <= 0x7FFFFFFF or len(data) > MAX_LENGTH:
                    raise ValueError(f"no DATA frame for stream {stream_id}, {len(data)} bytes")
                head = struct.pack(">II", stream_id, (FLAG_FIN if fin else 0) << 24 | len(data))
                return head + data
            case SynStream(stream_id, headers, associated, priority, fin, uni):
                flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if uni else 0)
                fixed = struct.pack(">IIBB", stream_id, associated, (priority & 7) << 5, 0)
                return _control(SYN_STREAM, flags, fixed + self._block(headers))
            case SynReply(stream_id, headers, fin):
                body = struct.pack(">I", stream_id) + self._block(headers)
                return _control(SYN_REPLY, FLAG_FIN if fin else 0, body)
            case HeadersFrame(stream_id, headers, fin):
                body = struct.pack(">I", stream_id) + self._block(headers)
                return _control(HEADERS, FLAG_FIN if fin else 0, body)
            case RstStream(stream_id, status):
                return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))
            case Settings(values, clear):
                entries = b"".join(struct.pack(">II", k & 0xFFFFFF, v) for k, v in values.items())
                body = struct.pack(">I", len(values)) + entries
                return _control(SETTINGS, 0x01 if clear else 0, body)
            case Ping(ping_id):
                return _control(PING, 0, struct.pack(">I", ping_id))
            case GoAway(last, status):
                return _control(GOAWAY, 0, struct.pack(">II", last, status))
            case WindowUpdate(stream_id, delta):
                return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")

    def _block(self, headers: Headers) -> bytes:
        return self._deflate.compress(_encode_block(headers)) + self._deflate.flush(
            zlib.Z_SYNC_FLUSH
        )


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"a control frame of {len(payload)} bytes")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload
