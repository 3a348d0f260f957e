"""The grpc probe: one ``grpc.health.v1.Health/Check`` call over HTTP/2 in clear text,
as the kubelet's grpc prober (``pkg/probe/grpc``) makes it, with its verdicts and texts.

A gRPC client in some forty lines of HTTP/2 rather than a dependency: the shim runs on
the standard library alone, and a health check is one request on one stream (the
preface and SETTINGS, HEADERS, one DATA frame; then the answer's HEADERS, DATA and
trailers, SETTINGS and PING acknowledged on the way). Header blocks go through
``hpack``. SERVING passes; another status fails (``service unhealthy (responded with
"NOT_SERVING")``), as does a gRPC error (``error: health rpc probe failed: rpc
error: code = NotFound desc = unknown service``). Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

from vk_fargate.fleetd import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
STREAM = 1
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
CODES = [
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
    "Unauthenticated",
]  # fmt: skip
UNIMPLEMENTED, DEADLINE_EXCEEDED = 12, 4


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _go_seconds(seconds: float) -> str:
    """A whole-second timeout as Go prints a time.Duration: 1s, 1m30s."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def _request(authority: str, service: str, user_agent: str, timeout: float) -> bytes:
    headers = hpack.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("user-agent", user_agent),
            ("te", "trailers"),
            ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
        ]
    )
    name = service.encode()
    message = (b"\x0a" + _varint(len(name)) + name) if name else b""
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    return (
        PREFACE
        + _frame(SETTINGS, 0, 0, b"")
        + _frame(HEADERS, END_HEADERS, STREAM, headers)
        + _frame(DATA, END_STREAM, STREAM, body)
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def serving_status(message: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, an enum) of a protobuf message."""
    at, found = 0, 0
    while at < len(message):
        key, at = _read_varint(message, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(message, at)
            if field == 1:
                found = value
        elif wire == 2:
            size, at = _read_varint(message, at)
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire}")
    return found


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[dict[str, str], bytes]:
    """The stream's headers and trailers (merged) and its DATA, once it has ended."""
    decoder = hpack.Decoder()
    fields: dict[str, str] = {}
    data = bytearray()
    block = bytearray()
    while True:
        head = await reader.readexactly(9)
        size, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(size)
        if kind == SETTINGS and not flags & ACK:
            writer.write(_frame(SETTINGS, ACK, 0, b""))
        elif kind == PING and not flags & ACK:
            writer.write(_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            raise ConnectionError("the server sent GOAWAY")
        elif kind == RST_STREAM and stream == STREAM:
            raise ConnectionError(f"stream reset (code {int.from_bytes(payload, 'big')})")
        elif kind in (HEADERS, CONTINUATION, DATA) and stream == STREAM:
            if flags & PADDED and kind != CONTINUATION:
                payload = payload[1 : len(payload) - payload[0]]
            if kind == DATA:
                data += payload
            else:
                if kind == HEADERS and flags & PRIORITY:
                    payload = payload[5:]
                block += payload
                if flags & END_HEADERS:
                    fields.update(decoder.decode(bytes(block)))
                    block.clear()
            if flags & END_STREAM and kind != CONTINUATION and not block:
                return fields, bytes(data)


async def probe(
    host: str, port: int, service: str, timeout: float, user_agent: str
) -> tuple[bool, str]:
    """One health check of ``service`` at ``host:port``: (passed, the failure's text)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):  # the kubelet's dial blocks, retrying, to its timeout
        return False, (
            f'timeout: failed to connect service "{address}" within '
            f"{_go_seconds(timeout)}: context deadline exceeded"
        )
    try:
        async with asyncio.timeout(timeout):
            writer.write(_request(address, service, user_agent, timeout))
            await writer.drain()
            fields, data = await _answer(reader, writer)
    except TimeoutError:
        return False, f"timeout: health rpc did not complete within {_go_seconds(timeout)}"
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return (
            False,
            f"error: health rpc probe failed: rpc error: code = Unavailable desc = {reason}",
        )
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return verdict(fields, data)


def verdict(fields: dict[str, str], data: bytes) -> tuple[bool, str]:
    """The kubelet's verdict on an answer's headers and trailers, and its DATA."""
    code = int(fields.get("grpc-status", "2") or 2)
    if fields.get(":status", "200") != "200":
        code = code if "grpc-status" in fields else UNIMPLEMENTED
    message = urllib.parse.unquote(fields.get("grpc-message", ""))
    if code == UNIMPLEMENTED:
        return False, (
            "error: this server does not implement the grpc health protocol "
            f"(grpc.health.v1.Health): {message}"
        )
    if code != 0:
        name = CODES[code] if code < len(CODES) else f"Code({code})"
        return False, f"error: health rpc probe failed: rpc error: code = {name} desc = {message}"
    status = serving_status(data[5:]) if len(data) >= 5 else 0
    if status != 1:
        name = SERVING_STATUS.get(status, str(status))
        return False, f'service unhealthy (responded with "{name}")'
    return True, ""
