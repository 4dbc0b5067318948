"""moq-lite's wire primitives (sans-IO): the message Writer and Reader, zigzag, stream types.

The `Reader` parses one message body a peer sent: every failure is a ProtocolError naming what
was being read, so a decoder never raises anything else.
"""

from __future__ import annotations

from enum import IntEnum

from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.version import Version
from relay.varint import decode_varint, encode_varint

MAX_HOPS = 32
MAX_PATH_PARTS = 32
MAX_PARAMETERS = 64


class BiStream(IntEnum):
    SESSION = 0
    ANNOUNCE = 1
    SUBSCRIBE = 2
    FETCH = 3
    PROBE = 4
    GOAWAY = 5
    TRACK = 6


class UniStream(IntEnum):
    GROUP = 0
    SETUP = 1


class SetupParam(IntEnum):
    PROBE = 1
    PATH = 2
    ROLE = 3
    COST = 4
    ORIGIN = 5


# ------------------------------------------------------------------------------- primitives
varint = encode_varint


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63) if n < 0 else n << 1


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


class Writer:
    """Builds a message body."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def varint(self, value: int) -> Writer:
        self.buf += varint(value)
        return self

    def u8(self, value: int) -> Writer:
        self.buf.append(value & 0xFF)
        return self

    def string(self, value: str) -> Writer:
        data = value.encode("utf-8")
        self.buf += varint(len(data))
        self.buf += data
        return self

    def blob(self, value: bytes) -> Writer:
        self.buf += varint(len(value))
        self.buf += value
        return self

    def hops(self, hops: list[int] | tuple[int, ...]) -> Writer:
        self.varint(len(hops))
        for hop in hops:
            self.varint(hop)
        return self

    def opt1(self, value: int | None) -> Writer:
        """`Opt+1`: 0 = absent, n+1 = n."""
        return self.varint(0 if value is None else value + 1)

    def framed(self) -> bytes:
        """Length-prefixed body."""
        return varint(len(self.buf)) + bytes(self.buf)

    def typed(self, kind: int) -> bytes:
        return varint(kind) + self.framed()


class Reader:
    """Parses one message body received from a peer. Every failure is a ProtocolError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _short(self, what: str) -> ProtocolError:
        return ProtocolError(ErrorCode.DECODE, f"message too short reading {what}")

    def varint(self, what: str = "varint") -> int:
        got = decode_varint(self.data, self.pos)
        if got is None:
            raise self._short(what)
        value, self.pos = got
        return value

    def u8(self, what: str = "byte") -> int:
        if self.pos >= len(self.data):
            raise self._short(what)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def bytes_(self, what: str = "bytes") -> bytes:
        n = self.varint(what)
        if n > self.remaining:
            raise ProtocolError(ErrorCode.DECODE, f"{what} length {n} exceeds the message")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def string(self, what: str = "string") -> str:
        raw = self.bytes_(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.DECODE, f"{what} is not valid UTF-8") from exc

    def path(self, what: str = "path") -> str:
        value = self.string(what)
        if value.count("/") >= MAX_PATH_PARTS:
            raise ProtocolError(ErrorCode.BOUNDS_EXCEEDED, f"{what} has more than {MAX_PATH_PARTS} parts")
        return value

    def hops(self) -> list[int]:
        count = self.varint("hop count")
        if count > MAX_HOPS:
            raise ProtocolError(ErrorCode.BOUNDS_EXCEEDED, f"{count} hops (limit {MAX_HOPS})")
        return [self.varint("hop id") for _ in range(count)]

    def opt1(self, what: str) -> int | None:
        value = self.varint(what)
        return None if value == 0 else value - 1

    def done(self, what: str) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(ErrorCode.DECODE, f"{self.remaining} trailing bytes after {what}")


def encode_uni_type(kind: int) -> bytes:
    return varint(kind)


def encode_bi_type(kind: int) -> bytes:
    return varint(kind)


def decode_varint_param(value: bytes) -> int:
    r = Reader(value)
    n = r.varint("parameter")
    r.done("varint parameter")
    return n


def need_version(version: Version, minimum: Version, what: str) -> None:
    if version < minimum:
        raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"{what} does not exist in {version.name_str}")
