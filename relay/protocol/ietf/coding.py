"""moq-transport wire primitives (sans-IO): the Reader of peer bytes, the Writer, key-value pairs,
namespace tuples, locations, extension-header blocks and the AUTHORIZATION_TOKEN structure.

Reader and Writer carry the session's draft (`version`, draft-14 unless told): key-value types
are absolute up to draft-15 and delta-coded from draft-16 (each type the difference from the
previous one, ascending; `IetfVersion.has_delta_keys`), with the count kept in front. From
draft-17 every varint is the leading-ones form (relay.protocol.ietf.varint) and a message
parameter's value has the shape its type names (`param_shape`), not the even/odd rule; Setup
Options, Track Properties and object properties keep the even/odd rule.

Every Reader failure is an IetfProtocolError (TruncatedInput when the bytes merely end early);
every count and length a peer declares is checked against a bound and against the bytes left
before anything is allocated for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from relay.protocol.ietf import varint as lo
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode, TruncatedInput
from relay.protocol.ietf.version import IetfVersion
from relay.protocol.lite.coding import Writer as LiteWriter
from relay.varint import MAX_VARINT, decode_varint, encode_varint

MAX_NAMESPACE_FIELDS = 32  # draft-14 and Rust: a tuple of 1..32 fields (Rust also allows 0)
MAX_PARAMETERS = 64  # Rust's limit per message (ietf/parameters.rs)
MAX_PARAMETER_VALUE = 0xFFFF  # an odd-typed value: at most 2^16 - 1 bytes
MAX_EXTENSIONS_LENGTH = 16 * 1024  # one object's extension-header block, in bytes
MAX_EXTENSION_HEADERS = 64  # key-value pairs inside one block

# A parameter or extension value: even types carry a varint, odd types carry bytes.
KeyValue = int | bytes  # draft-17+ message parameters may also hold a Location (an int tuple)
Params = dict[int, KeyValue]

_VIOLATION = SessionCode.PROTOCOL_VIOLATION
_KVP = SessionCode.KEY_VALUE_FORMATTING_ERROR


class Location(NamedTuple):
    """(Group ID, Object ID); tuples order the way the spec orders locations."""

    group: int
    object: int


class Shape(IntEnum):
    """How a draft-17+ message parameter's value is written (spec 17-22 §1.3)."""

    U8 = 1  # one raw byte
    VARINT = 2
    LOCATION = 3  # two bare varints
    BYTES = 4  # length + bytes
    TYPED_FILTER = 5  # draft-22 LOCATION_FILTER: `Type (vi)` and its fields, no length


# Every message parameter a draft-17+ peer may send, by the first draft that has it. A type not
# here cannot even be skipped (its value has no known shape): the message is a violation, as the
# draft and Rust say.
_PARAM_SHAPES: dict[int, tuple[Shape, IetfVersion]] = {
    0x02: (Shape.VARINT, IetfVersion.DRAFT_17),  # (OBJECT_)DELIVERY_TIMEOUT
    0x03: (Shape.BYTES, IetfVersion.DRAFT_17),  # AUTHORIZATION_TOKEN
    0x04: (Shape.VARINT, IetfVersion.DRAFT_17),  # RENDEZVOUS_TIMEOUT
    0x06: (Shape.VARINT, IetfVersion.DRAFT_18),  # SUBGROUP_DELIVERY_TIMEOUT
    0x08: (Shape.VARINT, IetfVersion.DRAFT_17),  # EXPIRES
    0x09: (Shape.LOCATION, IetfVersion.DRAFT_17),  # LARGEST_OBJECT
    0x0A: (Shape.VARINT, IetfVersion.DRAFT_18),  # FILL_TIMEOUT
    0x10: (Shape.U8, IetfVersion.DRAFT_17),  # FORWARD
    0x20: (Shape.U8, IetfVersion.DRAFT_17),  # SUBSCRIBER_PRIORITY
    0x21: (Shape.BYTES, IetfVersion.DRAFT_17),  # SUBSCRIPTION_FILTER / LOCATION_FILTER
    0x22: (Shape.U8, IetfVersion.DRAFT_17),  # GROUP_ORDER
    0x23: (Shape.BYTES, IetfVersion.DRAFT_20),  # FILL_PARAMETERS
    0x25: (Shape.BYTES, IetfVersion.DRAFT_19),  # SUBGROUP_FILTER
    0x26: (Shape.BYTES, IetfVersion.DRAFT_19),  # OBJECTID_FILTER
    0x27: (Shape.BYTES, IetfVersion.DRAFT_19),  # PRIORITY_FILTER
    0x28: (Shape.BYTES, IetfVersion.DRAFT_19),  # OBJECT_PROPERTY_FILTER
    0x29: (Shape.BYTES, IetfVersion.DRAFT_19),  # TRACK_PROPERTY_FILTER
    0x32: (Shape.VARINT, IetfVersion.DRAFT_17),  # NEW_GROUP_REQUEST
    0x34: (Shape.BYTES, IetfVersion.DRAFT_18),  # TRACK_NAMESPACE_PREFIX
    0x35: (Shape.BYTES, IetfVersion.DRAFT_20),  # INCLUDE_PROPERTIES (one byte, length-prefixed as Rust codes it)
}
LOCATION_FILTER = 0x21


def param_shape(key: int, version: IetfVersion) -> Shape | None:
    """The value shape of message parameter `key` on a draft-17+ `version`; None when unknown."""
    entry = _PARAM_SHAPES.get(key)
    if entry is None or version < entry[1]:
        return None
    if key == LOCATION_FILTER and version.has_typed_filter:
        return Shape.TYPED_FILTER
    return entry[0]


# Draft-22's LOCATION_FILTER types and how many varints follow each (spec 17-22 §7).
TYPED_FILTER_FIELDS = {0x00: 0, 0x01: 1, 0x02: 2, 0x03: 3, 0x04: 4, 0x05: 0}


class GroupOrder(IntEnum):
    PUBLISHER = 0x0  # "original publisher's order"; Rust reads it as descending
    ASCENDING = 0x1
    DESCENDING = 0x2


class FilterType(IntEnum):
    NEXT_GROUP_START = 0x1
    LARGEST_OBJECT = 0x2
    ABSOLUTE_START = 0x3
    ABSOLUTE_RANGE = 0x4


class Writer(LiteWriter):
    """The lite Writer (varint, u8, string, blob) plus the IETF field shapes, for one draft."""

    __slots__ = ("version", "_encode")

    def __init__(self, version: IetfVersion = IetfVersion.DRAFT_14) -> None:
        super().__init__()
        self.version = version
        self._encode = lo.encode if version.has_request_streams else encode_varint

    def varint(self, value: int) -> Writer:
        self.buf += self._encode(value)
        return self

    def string(self, value: str) -> Writer:
        return self.blob(value.encode("utf-8"))

    def blob(self, value: bytes) -> Writer:
        self.buf += self._encode(len(value))
        self.buf += value
        return self

    def flag(self, value: bool) -> Writer:
        self.buf.append(1 if value else 0)
        return self

    def raw(self, data: bytes) -> Writer:
        self.buf += data
        return self

    def namespace(self, fields: tuple[str, ...]) -> Writer:
        if len(fields) > MAX_NAMESPACE_FIELDS:
            raise ValueError(f"namespace of {len(fields)} fields (limit {MAX_NAMESPACE_FIELDS})")
        self.varint(len(fields))
        for item in fields:
            self.string(item)
        return self

    def location(self, where: Location) -> Writer:
        return self.varint(where.group).varint(where.object)

    def params(self, params: Params) -> Writer:
        if len(params) > MAX_PARAMETERS:
            raise ValueError(f"{len(params)} parameters (limit {MAX_PARAMETERS})")
        self.varint(len(params))
        if self.version.has_request_streams:
            self._shaped_params(params)
        else:
            write_pairs(self, list(params.items()))
        return self

    def _shaped_params(self, params: Params) -> None:
        previous = 0
        for key, value in sorted(params.items(), key=lambda pair: pair[0]):
            shape = param_shape(key, self.version)
            if shape is None:
                raise ValueError(f"parameter {key:#x} does not exist in {self.version.name_str}")
            self.varint(key - previous)
            previous = key
            if shape is Shape.LOCATION and isinstance(value, Location):
                self.location(value)
            elif shape is Shape.BYTES and isinstance(value, bytes | bytearray):
                self.blob(bytes(value))
            elif shape is Shape.TYPED_FILTER and isinstance(value, bytes | bytearray):
                self.raw(bytes(value))
            elif shape is Shape.U8 and isinstance(value, int) and not isinstance(value, Location):
                self.u8(value)
            elif shape is Shape.VARINT and isinstance(value, int) and not isinstance(value, Location):
                self.varint(value)
            else:
                raise ValueError(f"parameter {key:#x} takes a {shape.name} value, not {value!r}")

    def request_head(self, request_id: int) -> Writer:
        """A request's `Request ID`, and on draft-17 its Required Request ID Delta (0: none)."""
        self.varint(request_id)
        if self.version.has_required_delta:
            self.varint(0)
        return self

    def reply_id(self, request_id: int) -> Writer:
        """A reply's Request ID: on the wire up to draft-16; from 17 the stream says which."""
        if not self.version.has_request_streams:
            self.varint(request_id)
        return self


def write_pairs(w: Writer, pairs: list[tuple[int, KeyValue]]) -> None:
    """Pairs without a count: as given up to draft-15; sorted and delta-coded from draft-16."""
    if not w.version.has_delta_keys:
        for key, value in pairs:
            write_key_value(w, key, value)
        return
    previous = 0
    for key, value in sorted(pairs, key=lambda pair: pair[0]):
        write_key_value(w, key, value, key - previous)
        previous = key


def write_key_value(w: Writer, key: int, value: KeyValue, wire_type: int | None = None) -> None:
    """One pair with the even/odd rule: even ⇒ varint value, odd ⇒ length + bytes. `wire_type`
    is what goes on the wire for the type (the delta from draft-16), `key` by default."""
    w.varint(key if wire_type is None else wire_type)
    if key % 2 == 0:
        if not isinstance(value, int):
            raise ValueError(f"even key {key:#x} needs an integer value")
        w.varint(value)
    else:
        if not isinstance(value, bytes | bytearray):
            raise ValueError(f"odd key {key:#x} needs a bytes value")
        if len(value) > MAX_PARAMETER_VALUE:
            raise ValueError(f"value of key {key:#x} is {len(value)} bytes (limit {MAX_PARAMETER_VALUE})")
        w.blob(bytes(value))


class Reader:
    """Parses bytes a peer sent. Every failure is an IetfProtocolError."""

    __slots__ = ("data", "pos", "end", "version", "_previous_key", "_seven")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None,
                 version: IetfVersion = IetfVersion.DRAFT_14) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.version = version
        self._previous_key: int | None = None  # draft-16: the last type of the current run of pairs
        # Draft-17+: the leading-ones varint (None: QUIC's), with or without the 7-byte form.
        self._seven: bool | None = version.has_seven_byte_varint if version.has_request_streams else None

    def start_pairs(self) -> None:
        """A new run of key-value pairs begins (its first type is absolute on every draft)."""
        self._previous_key = None

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def varint(self, what: str) -> int:
        if self.pos >= self.end:
            raise TruncatedInput(f"input ends inside {what}")
        if self._seven is None:
            got = decode_varint(self.data, self.pos)
        else:
            got = lo.decode(self.data, self.pos, self._seven)
            if got is lo.BAD_FORM:
                raise IetfProtocolError(_VIOLATION, f"{what}: the 7-byte varint form is invalid on draft-17")
        if got is None or got[1] > self.end:
            raise TruncatedInput(f"input ends inside {what}")
        value, self.pos = got
        return value

    def request_head(self, what: str = "request id") -> int:
        """A request's Request ID (draft-17: and its Required Request ID Delta, checked)."""
        request_id = self.varint(what)
        if self.version.has_required_delta:
            delta = self.varint("required request id delta")
            if 2 * delta > request_id:
                raise IetfProtocolError(SessionCode.INVALID_REQUIRED_REQUEST_ID,
                                        f"required request id delta {delta} reaches below 0 from {request_id}")
        return request_id

    def reply_id(self, what: str = "request id") -> int:
        """A reply's Request ID, up to draft-16; from 17 it is not on the wire (0 here: the
        request stream's reader fills it in)."""
        return 0 if self.version.has_request_streams else self.varint(what)

    def u8(self, what: str) -> int:
        if self.pos >= self.end:
            raise TruncatedInput(f"input ends before {what}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def flag(self, what: str) -> bool:
        value = self.u8(what)
        if value > 1:  # Rust accepts only 0 and 1 for a boolean byte
            raise IetfProtocolError(_VIOLATION, f"{what} is {value}, not 0 or 1")
        return value == 1

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise TruncatedInput(f"{what} needs {n} bytes, {self.remaining} left")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def blob(self, what: str, limit: int = MAX_PARAMETER_VALUE) -> bytes:
        n = self.varint(f"{what} length")
        if n > limit:
            raise IetfProtocolError(_VIOLATION, f"{what} of {n} bytes (limit {limit})")
        return self.take(n, what)

    def string(self, what: str, code: int = _VIOLATION) -> str:
        raw = self.blob(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IetfProtocolError(code, f"{what} is not valid UTF-8") from exc

    def namespace(self, what: str = "track namespace") -> tuple[str, ...]:
        count = self.varint(f"{what} field count")
        if count > MAX_NAMESPACE_FIELDS:
            raise IetfProtocolError(_VIOLATION, f"{what} of {count} fields (limit {MAX_NAMESPACE_FIELDS})")
        return tuple(self.string(f"{what} field") for _ in range(count))

    def location(self, what: str) -> Location:
        return Location(self.varint(f"{what} group"), self.varint(f"{what} object"))

    def group_order(self, what: str = "group order") -> GroupOrder:
        value = self.u8(what)
        if value not in GroupOrder._value2member_map_:
            raise IetfProtocolError(_VIOLATION, f"{what} {value:#x} is not a group order")
        return GroupOrder(value)

    def filter_type(self) -> FilterType:
        value = self.varint("filter type")
        if value not in FilterType._value2member_map_:
            raise IetfProtocolError(_VIOLATION, f"unknown filter type {value:#x}")
        return FilterType(value)

    def pair_type(self, what: str) -> int:
        """One pair's type: absolute, or from draft-16 the delta from the run's previous type."""
        key = self.varint(f"{what} type")
        if self.version.has_delta_keys and self._previous_key is not None:
            key += self._previous_key
            if key > MAX_VARINT:
                raise IetfProtocolError(_KVP, f"{what} type beyond 2^62 - 1")
        self._previous_key = key
        return key

    def key_value(self, seen: Params, what: str) -> None:
        key = self.pair_type(what)
        if key in seen:
            raise IetfProtocolError(_KVP, f"duplicate {what} {key:#x}")
        if key % 2 == 0:
            seen[key] = self.varint(f"{what} {key:#x} value")
            return
        n = self.varint(f"{what} {key:#x} length")
        if n > MAX_PARAMETER_VALUE:
            raise IetfProtocolError(_KVP, f"{what} {key:#x} of {n} bytes (limit {MAX_PARAMETER_VALUE})")
        if n > self.remaining:
            raise IetfProtocolError(_KVP, f"{what} {key:#x} length {n} exceeds the message")
        seen[key] = self.take(n, what)

    def params(self, what: str = "parameter") -> Params:
        count = self.varint(f"{what} count")
        if count > MAX_PARAMETERS:
            raise IetfProtocolError(_KVP, f"{count} {what}s (limit {MAX_PARAMETERS})")
        params: Params = {}
        self.start_pairs()
        for _ in range(count):
            if self.version.has_request_streams:
                self._shaped_param(params, what)
            else:
                self.key_value(params, what)
        return params

    def _shaped_param(self, seen: Params, what: str) -> None:
        key = self.pair_type(what)
        if key in seen:
            raise IetfProtocolError(_KVP, f"duplicate {what} {key:#x}")
        shape = param_shape(key, self.version)
        if shape is None:
            raise IetfProtocolError(_VIOLATION, f"unknown {what} {key:#x} on {self.version.name_str}")
        if shape is Shape.U8:
            seen[key] = self.u8(f"{what} {key:#x} value")
        elif shape is Shape.VARINT:
            seen[key] = self.varint(f"{what} {key:#x} value")
        elif shape is Shape.LOCATION:
            seen[key] = self.location(f"{what} {key:#x}")  # type: ignore[assignment]
        elif shape is Shape.TYPED_FILTER:
            start = self.pos
            kind = self.varint("location filter type")
            if kind not in TYPED_FILTER_FIELDS:
                raise IetfProtocolError(_VIOLATION, f"unknown location filter type {kind:#x}")
            for _ in range(TYPED_FILTER_FIELDS[kind]):
                self.varint("location filter field")
            seen[key] = bytes(self.data[start:self.pos])
        else:
            n = self.varint(f"{what} {key:#x} length")
            if n > MAX_PARAMETER_VALUE:
                raise IetfProtocolError(_KVP, f"{what} {key:#x} of {n} bytes (limit {MAX_PARAMETER_VALUE})")
            seen[key] = self.take(n, what)

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise IetfProtocolError(_VIOLATION, f"{self.remaining} trailing bytes after {what}")


# ------------------------------------------------------------------------ extension headers
def read_extensions(r: Reader) -> bytes:
    """An object's extension block (`Length (i)` + pairs without a count), returned raw so a
    relay forwards it unchanged, after checking that it is well-formed and bounded."""
    n = r.varint("extension headers length")
    if n > MAX_EXTENSIONS_LENGTH:
        raise IetfProtocolError(_VIOLATION, f"extension headers of {n} bytes (limit {MAX_EXTENSIONS_LENGTH})")
    block = r.take(n, "extension headers")
    parse_extensions(block, r.version)
    return block


def parse_extensions(block: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> list[tuple[int, KeyValue]]:
    """The pairs of an extension block (absolute types); types may repeat (unlike parameters).
    The wire types are absolute up to draft-15 and delta-coded from draft-16 (a delta of 0
    repeats the type)."""
    r = Reader(block, version=version)
    r.start_pairs()
    pairs: list[tuple[int, KeyValue]] = []
    while r.remaining:
        if len(pairs) == MAX_EXTENSION_HEADERS:
            raise IetfProtocolError(_VIOLATION, f"more than {MAX_EXTENSION_HEADERS} extension headers")
        one: Params = {}
        try:
            r.key_value(one, "extension header")
        except TruncatedInput as exc:  # the block's own length said it was complete
            raise IetfProtocolError(_VIOLATION, f"malformed extension headers: {exc}") from exc
        pairs.extend(one.items())
    return pairs


def encode_extensions(pairs: list[tuple[int, KeyValue]] | Params,
                      version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
    """An extension block's body (without its length prefix), for `version`."""
    w = Writer(version)
    write_pairs(w, list(pairs.items()) if isinstance(pairs, dict) else list(pairs))
    return bytes(w.buf)


def recode_extensions(block: bytes, source: IetfVersion, target: IetfVersion) -> bytes:
    """An extension block read on `source` as it must be written on `target` (the relay
    forwards blocks between drafts: only the type coding differs, absolute or delta)."""
    if source.has_delta_keys == target.has_delta_keys or not block:
        return block
    return encode_extensions(parse_extensions(block, source), target)


# ------------------------------------------------------------------------ authorization token
class TokenAliasType(IntEnum):
    DELETE = 0x0
    REGISTER = 0x1
    USE_ALIAS = 0x2
    USE_VALUE = 0x3


@dataclass
class AuthToken:
    """The value of an AUTHORIZATION_TOKEN parameter (key 0x03)."""

    alias_type: TokenAliasType
    alias: int | None = None  # DELETE, REGISTER, USE_ALIAS
    token_type: int | None = None  # REGISTER, USE_VALUE
    token_value: bytes = b""  # REGISTER, USE_VALUE: the rest of the parameter value

    def encode(self) -> bytes:
        w = Writer().varint(self.alias_type)
        if self.alias_type != TokenAliasType.USE_VALUE:
            w.varint(_required(self.alias, "token alias"))
        if self.alias_type in (TokenAliasType.REGISTER, TokenAliasType.USE_VALUE):
            w.varint(_required(self.token_type, "token type")).raw(self.token_value)
        return bytes(w.buf)

    @classmethod
    def decode(cls, value: bytes) -> AuthToken:
        r = Reader(value)
        try:
            kind = r.varint("token alias type")
            if kind not in TokenAliasType._value2member_map_:
                raise IetfProtocolError(SessionCode.MALFORMED_AUTH_TOKEN, f"token alias type {kind:#x}")
            token = cls(TokenAliasType(kind))
            if token.alias_type != TokenAliasType.USE_VALUE:
                token.alias = r.varint("token alias")
            if token.alias_type in (TokenAliasType.REGISTER, TokenAliasType.USE_VALUE):
                token.token_type = r.varint("token type")
                token.token_value = r.take(r.remaining, "token value")
            r.done("authorization token")
        except IetfProtocolError as exc:
            raise IetfProtocolError(SessionCode.MALFORMED_AUTH_TOKEN, str(exc)) from exc
        return token


def _required(value: int | None, what: str) -> int:
    if value is None:
        raise ValueError(f"{what} is required here")
    return value

