"""HPACK (RFC 7541), as much as a gRPC health probe needs: a header block encoded
with literals only, and any header block a server sends decoded (indexed fields, the
dynamic table, Huffman-coded strings).

The Huffman code is canonical, so RFC 7541 Appendix B is given here by its code
lengths alone (symbols 0-255, two digits each; EOS is the one 30-bit code left), and
the codes are rebuilt from them. Standard library only: this module runs inside every
shim.
"""

from __future__ import annotations

# RFC 7541 Appendix A, entries 1-61.
STATIC = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"),
    (":status", "200"), (":status", "204"), (":status", "206"), (":status", "304"),
    (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
]  # fmt: skip
LENGTHS = (
    "13232828282828282824302828302828282828282828302828282828282828280610101213060811"
    "10100811080606060505050606060606060607081506121013060707070707070707070707070707"
    "07070707070707070807081319131406150506050605060606050707060606050607060505060707"
    "07070715111413282022202022222223222323232323242324242223242323232321222322232324"
    "22212022222323212322222421222323212122212322232320222222232222232626201922232225"
    "26262627272624251921262727262724212126262827272720242021222121232222252524242623"
    "26272626272727272728272727272726"
)
EOS = 256


class HpackError(ValueError):
    """A header block that does not decode."""


def _huffman_codes() -> dict[tuple[int, int], int]:
    """(code, length) -> symbol, the canonical code rebuilt from the lengths."""
    lengths = [int(LENGTHS[i : i + 2]) for i in range(0, len(LENGTHS), 2)] + [30]
    codes: dict[tuple[int, int], int] = {}
    code, previous = -1, 0
    for symbol in sorted(range(len(lengths)), key=lambda s: (lengths[s], s)):
        code = (code + 1) << (lengths[symbol] - previous)
        previous = lengths[symbol]
        codes[(code, previous)] = symbol
    return codes


HUFFMAN = _huffman_codes()


def huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code, length = (code << 1) | ((byte >> shift) & 1), length + 1
            symbol = HUFFMAN.get((code, length))
            if symbol == EOS:
                raise HpackError("EOS in a Huffman-coded string")
            if symbol is not None:
                out.append(symbol)
                code = length = 0
            elif length > 30:
                raise HpackError("not a Huffman code")
    if length > 7 or code != (1 << length) - 1:  # padding: at most 7 bits, all ones
        raise HpackError("bad Huffman padding")
    return bytes(out)


def _integer(data: bytes, at: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix at ``data[at]``: (value, next position)."""
    limit = (1 << prefix) - 1
    value = data[at] & limit
    at += 1
    if value < limit:
        return value, at
    shift = 0
    while True:
        if at >= len(data):
            raise HpackError("truncated integer")
        byte = data[at]
        at += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _string(data: bytes, at: int) -> tuple[str, int]:
    huffman = bool(data[at] & 0x80)
    size, at = _integer(data, at, 7)
    raw = data[at : at + size]
    if len(raw) != size:
        raise HpackError("truncated string")
    text = huffman_decode(raw) if huffman else raw
    return text.decode("latin-1"), at + size


class Decoder:
    """One connection's decoding state (its dynamic table)."""

    def __init__(self) -> None:
        self.dynamic: list[tuple[str, str]] = []  # newest first
        self.max_size = 4096

    def _entry(self, index: int) -> tuple[str, str]:
        if 1 <= index <= len(STATIC):
            return STATIC[index - 1]
        if 0 <= index - len(STATIC) - 1 < len(self.dynamic):
            return self.dynamic[index - len(STATIC) - 1]
        raise HpackError(f"no header table entry {index}")

    def _add(self, field: tuple[str, str]) -> None:
        self.dynamic.insert(0, field)
        self._evict()

    def _evict(self) -> None:
        while self.dynamic and sum(32 + len(n) + len(v) for n, v in self.dynamic) > self.max_size:
            self.dynamic.pop()

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        at = 0
        while at < len(block):
            first = block[at]
            if first & 0x80:  # indexed
                index, at = _integer(block, at, 7)
                fields.append(self._entry(index))
                continue
            if first & 0xE0 == 0x20:  # dynamic table size update
                self.max_size, at = _integer(block, at, 5)
                self._evict()
                continue
            indexing = bool(first & 0x40)
            index, at = _integer(block, at, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, at = _string(block, at)
            value, at = _string(block, at)
            fields.append((name, value))
            if indexing:
                self._add((name, value))
        return fields


def encode(fields: list[tuple[str, str]]) -> bytes:
    """A header block of literals without indexing, new names, no Huffman coding."""
    out = bytearray()
    for name, value in fields:
        out.append(0)
        for text in (name.encode("latin-1"), value.encode("latin-1")):
            out += _encode_integer(len(text), 7) + text
    return bytes(out)


def _encode_integer(value: int, prefix: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
