"""The legacy in-band SETUP of lite-01/02 (lite §3.5), sans-IO: CLIENT_SETUP / SERVER_SETUP.

Used under ALPN `moql`, and on WebTransport / WebSocket sessions that negotiated no moq
protocol. The client opens the first bidirectional stream and writes `0x20`, a big-endian u16
length and the body; the server answers `0x21`, u16 length, body. Two generations of clients
write the parameters in the body differently (`LegacyParams`); the relay reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.messages import MAX_PARAMETERS, Reader, Writer

LEGACY_CLIENT_SETUP = 0x20
LEGACY_SERVER_SETUP = 0x21
LEGACY_PARAM_PATH = 0x01
MAX_LEGACY_VERSIONS = 64


class LegacyParams(Enum):
    """How the parameters of a legacy CLIENT_SETUP / SERVER_SETUP are written (lite §3.5).

    Both: `Count (i)`, then per parameter `Key (i)` and

    * KVP (IETF draft-14 key-value pairs; moq-rs 0.4.18 and Rust HEAD): an even key is followed
      by one varint value, an odd key by `Length (i)` and that many bytes;
    * TLV (seed era; @kixelated/moq 0.9 and moq-lite 0.9.6): every key is followed by
      `Length (i)` and bytes, e.g. the JS client's `02 01 3f` (key 2, 1 byte 0x3f).

    Odd keys (Path = 1 among them) read the same either way. Nothing in the message names the
    encoding; the bytes decide: see `decode_legacy_params`.
    """

    KVP = "draft-14"
    TLV = "id-length-value"


LegacyParamValues = dict[int, int | bytes]


def _legacy_params(data: bytes, encoding: LegacyParams) -> LegacyParamValues:
    """All of `data` as parameters in one encoding; ProtocolError unless it fits exactly."""
    r = Reader(data)
    count = r.varint("parameter count")
    if count > MAX_PARAMETERS:
        raise ProtocolError(ErrorCode.TOO_MANY_PARAMETERS, f"{count} SETUP parameters")
    params: LegacyParamValues = {}
    for _ in range(count):
        key = r.varint("parameter key")
        if key in params:
            raise ProtocolError(ErrorCode.DUPLICATE, f"duplicate SETUP parameter {key}")
        if encoding is LegacyParams.KVP and key % 2 == 0:
            params[key] = r.varint("parameter value")
        else:
            params[key] = r.bytes_("parameter value")
    r.done("the SETUP parameters")
    return params


def decode_legacy_params(data: bytes, what: str) -> tuple[LegacyParams, LegacyParamValues]:
    """The parameter section of a legacy SETUP, in whichever encoding its bytes fit exactly.

    An even key's value is a varint (KVP) or a length and bytes (TLV): the two readings consume
    different bytes, so a real message fits one and leaves the other with trailing bytes or a
    length beyond the end (0.4.18's `02 c0000000ffffffff` is no TLV; the JS client's `02 01 3f`
    is no KVP). Only contrived bytes fit both (`02 02 01 01 01 00`); then the draft-14 reading
    is taken if both agree on the Path, the one parameter the relay uses, and the message is
    refused as ambiguous if they do not."""
    readings: dict[LegacyParams, LegacyParamValues] = {}
    failures: dict[LegacyParams, ProtocolError] = {}
    for encoding in LegacyParams:
        try:
            readings[encoding] = _legacy_params(data, encoding)
        except ProtocolError as exc:
            failures[encoding] = exc
    if not readings:
        raise ProtocolError(ErrorCode.DECODE, f"{what} parameters fit no known encoding ("
                            + "; ".join(f"{e.value}: {failures[e]}" for e in LegacyParams) + ")")
    if len(readings) == 2:
        kvp, tlv = readings[LegacyParams.KVP], readings[LegacyParams.TLV]
        if kvp.get(LEGACY_PARAM_PATH) != tlv.get(LEGACY_PARAM_PATH):
            raise ProtocolError(ErrorCode.DECODE, f"{what} parameters are ambiguous: the two encodings "
                                "read different paths")
        return LegacyParams.KVP, kvp
    encoding = next(iter(readings))
    return encoding, readings[encoding]


def _encode_legacy_params(w: Writer, params: LegacyParamValues, encoding: LegacyParams) -> None:
    w.varint(len(params))
    for key, value in params.items():
        w.varint(key)
        if isinstance(value, int):
            if encoding is not LegacyParams.KVP or key % 2:
                raise ValueError(f"parameter {key}: a varint value needs an even key in KVP")
            w.varint(value)
        else:
            w.blob(value)


def _legacy_frame(kind: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"legacy SETUP body of {len(body)} bytes does not fit its 16-bit length")
    return bytes((kind,)) + len(body).to_bytes(2, "big") + body


@dataclass
class LegacyClientSetup:
    """CLIENT_SETUP of the in-band negotiation (lite §3.5): 0x20, u16 length, body.

    The body is `Version Count (i)`, the versions, then the parameters in either encoding of
    `LegacyParams`; `params_encoding` says which one the bytes used. The framing around them is
    the same for every client: the JS client writes the type as varint 0x20, which is the byte
    0x20, and the length as a big-endian u16 like moq-rs."""

    versions: list[int]
    params: LegacyParamValues = field(default_factory=dict)
    params_encoding: LegacyParams = LegacyParams.KVP

    @property
    def path(self) -> str | None:
        raw = self.params.get(LEGACY_PARAM_PATH)
        if isinstance(raw, bytes):
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(ErrorCode.DECODE, "CLIENT_SETUP path is not UTF-8") from exc
        return None

    def encode(self) -> bytes:
        w = Writer().varint(len(self.versions))
        for v in self.versions:
            w.varint(v)
        _encode_legacy_params(w, self.params, self.params_encoding)
        return _legacy_frame(LEGACY_CLIENT_SETUP, bytes(w.buf))

    @classmethod
    def decode(cls, body: bytes) -> LegacyClientSetup:
        r = Reader(body)
        count = r.varint("version count")
        if count > MAX_LEGACY_VERSIONS:
            raise ProtocolError(ErrorCode.BOUNDS_EXCEEDED, f"{count} versions offered")
        versions = [r.varint("version") for _ in range(count)]
        encoding, params = decode_legacy_params(body[r.pos :], "CLIENT_SETUP")
        return cls(versions, params, encoding)


@dataclass
class LegacyServerSetup:
    """SERVER_SETUP: 0x21, u16 length, `Selected Version (i)`, parameters. We send none
    (`count 0`), which reads the same in both encodings."""

    version: int
    params: LegacyParamValues = field(default_factory=dict)
    params_encoding: LegacyParams = LegacyParams.KVP

    def encode(self) -> bytes:
        w = Writer().varint(self.version)
        _encode_legacy_params(w, self.params, self.params_encoding)
        return _legacy_frame(LEGACY_SERVER_SETUP, bytes(w.buf))

    @classmethod
    def decode(cls, body: bytes) -> LegacyServerSetup:
        r = Reader(body)
        version = r.varint("version")
        encoding, params = decode_legacy_params(body[r.pos :], "SERVER_SETUP")
        return cls(version, params, encoding)
