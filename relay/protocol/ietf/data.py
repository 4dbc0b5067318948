"""The data plane of drafts 14-16 (spec §6, §7.1), sans-IO: SUBGROUP_HEADER and FETCH_HEADER uni streams with
their objects, object datagrams, a writer for subgroup streams and an incremental reader for
both stream kinds (feed bytes as they arrive, get the header, then each object once complete).
Draft-15 adds SUBGROUP_HEADER types 0x30-0x3D: the same bits without the Publisher Priority
byte (the priority comes from the subscription); from draft-16 extension types are delta-coded.
From draft-17 every varint is the leading-ones form (the layouts stay); from 18 the header type
may carry bit 0x40, FIRST_OBJECT (the stream starts at the subgroup's first object), which our
writer always sets since it always starts at object 0. Object datagrams and FETCH_HEADER objects
are coded as drafts 14-16 have them (the relay relays neither on 17+: spec 17-22 notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from relay.model.track import MAX_FRAME_SIZE
from relay.protocol.ietf import varint as lo
from relay.protocol.ietf.coding import Reader, Writer, parse_extensions, read_extensions
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode, TruncatedInput
from relay.protocol.ietf.version import IetfVersion
from relay.varint import MAX_VARINT, encode_varint

_VIOLATION = SessionCode.PROTOCOL_VIOLATION

FETCH_HEADER = 0x05
SUBGROUP_HEADER_BASE = 0x10
# Header type bits above the base.
_HAS_EXTENSIONS = 0x01
_SUBGROUP_IS_FIRST_OBJECT = 0x02
_SUBGROUP_ON_WIRE = 0x04
_ENDS_GROUP = 0x08
# 0x02 with 0x04 (0x16, 0x17, 0x1E, 0x1F) is contradictory: 12 valid types remain.
SUBGROUP_HEADER_TYPES = frozenset(
    SUBGROUP_HEADER_BASE | bits for bits in range(0x0E) if bits & 0x06 != 0x06
)
_NO_PRIORITY = 0x20  # draft-15 on: 0x30-0x3D, no Publisher Priority byte
_FIRST_OBJECT = 0x40  # draft-18 on: the stream starts at the subgroup's first object
PRIORITYLESS_SUBGROUP_HEADER_TYPES = frozenset(kind | _NO_PRIORITY for kind in SUBGROUP_HEADER_TYPES)

OBJECT_DATAGRAM_TYPES = range(0x00, 0x08)  # bits: 0x01 extensions, 0x02 end of group, 0x04 no Object ID
OBJECT_DATAGRAM_STATUS_TYPES = range(0x20, 0x22)  # bit 0x01 extensions
_DATAGRAM_NO_OBJECT_ID = 0x04


class ObjectStatus(IntEnum):
    NORMAL = 0x0  # with payload length 0: an empty object
    DOES_NOT_EXIST = 0x1
    END_OF_GROUP = 0x3
    END_OF_TRACK = 0x4


class SubgroupIdMode(IntEnum):
    """Where a subgroup's ID comes from (header type bits 0x02 / 0x04)."""

    ZERO = 0x00  # not on the wire, 0 (what every Rust peer sends and accepts)
    FIRST_OBJECT = _SUBGROUP_IS_FIRST_OBJECT  # not on the wire, the first object's ID
    EXPLICIT = _SUBGROUP_ON_WIRE


def is_subgroup_header(stream_type: int, version: IetfVersion = IetfVersion.DRAFT_14) -> bool:
    if version.has_first_object_bit:
        stream_type &= ~_FIRST_OBJECT
    return stream_type in SUBGROUP_HEADER_TYPES or (
        version.has_priorityless_subgroups and stream_type in PRIORITYLESS_SUBGROUP_HEADER_TYPES)


@dataclass
class SubgroupHeader:
    track_alias: int
    group_id: int
    publisher_priority: int | None = 128  # None: not on the wire (0x30-0x3D, draft-15 on)
    subgroup_id: int | None = 0  # None until the first object when mode is FIRST_OBJECT
    subgroup_id_mode: SubgroupIdMode = SubgroupIdMode.ZERO
    has_extensions: bool = False  # every object on the stream carries an extension block
    ends_group: bool = False  # the object before FIN is the group's last
    first_object: bool = True  # draft-18 on: bit 0x40 (the stream holds the subgroup from its start)

    @property
    def stream_type(self) -> int:
        """The type without the draft-18 FIRST_OBJECT bit (`wire_type` adds it)."""
        return (
            SUBGROUP_HEADER_BASE
            | (_NO_PRIORITY if self.publisher_priority is None else 0)
            | self.subgroup_id_mode
            | (_HAS_EXTENSIONS if self.has_extensions else 0)
            | (_ENDS_GROUP if self.ends_group else 0)
        )

    def encode(self, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
        if self.publisher_priority is None and not version.has_priorityless_subgroups:
            raise ValueError(f"{version.name_str} subgroup headers carry a publisher priority")
        if self.publisher_priority is not None and not 0 <= self.publisher_priority <= 0xFF:
            raise ValueError(f"publisher priority {self.publisher_priority} is not one byte")
        w = Writer(version).varint(self.wire_type(version)).varint(self.track_alias).varint(self.group_id)
        if self.subgroup_id_mode == SubgroupIdMode.EXPLICIT:
            if self.subgroup_id is None:
                raise ValueError("an explicit subgroup id is needed")
            w.varint(self.subgroup_id)
        elif self.subgroup_id_mode == SubgroupIdMode.ZERO and self.subgroup_id not in (0, None):
            raise ValueError(f"subgroup id {self.subgroup_id} cannot be sent as 'zero'")
        if self.publisher_priority is not None:
            w.u8(self.publisher_priority)
        return bytes(w.buf)

    def wire_type(self, version: IetfVersion) -> int:
        first = _FIRST_OBJECT if version.has_first_object_bit and self.first_object else 0
        return self.stream_type | first

    @classmethod
    def read(cls, r: Reader, stream_type: int) -> SubgroupHeader:
        if not is_subgroup_header(stream_type, r.version):
            raise IetfProtocolError(_VIOLATION, f"{stream_type:#x} is not a SUBGROUP_HEADER type on {r.version.name_str}")
        first = bool(stream_type & _FIRST_OBJECT) if r.version.has_first_object_bit else True
        stream_type &= ~_FIRST_OBJECT
        has_priority = not stream_type & _NO_PRIORITY
        bits = (stream_type & ~_NO_PRIORITY) - SUBGROUP_HEADER_BASE
        mode = SubgroupIdMode(bits & (_SUBGROUP_IS_FIRST_OBJECT | _SUBGROUP_ON_WIRE))
        alias, group = r.varint("track alias"), r.varint("group id")
        subgroup: int | None = {SubgroupIdMode.ZERO: 0, SubgroupIdMode.FIRST_OBJECT: None}.get(mode)
        if mode == SubgroupIdMode.EXPLICIT:
            subgroup = r.varint("subgroup id")
        priority = r.u8("publisher priority") if has_priority else None
        return cls(alias, group, priority, subgroup, mode, bool(bits & _HAS_EXTENSIONS), bool(bits & _ENDS_GROUP),
                   first)


@dataclass
class SubgroupObject:
    """One object of a subgroup stream. `extensions` is the raw extension block (pairs without
    the length prefix): relays forward it as it came; coding.parse_extensions reads it."""

    object_id: int
    payload: bytes = b""
    status: ObjectStatus = ObjectStatus.NORMAL  # only on the wire when the payload is empty
    extensions: bytes = b""


def _write_payload(w: Writer, payload: bytes, status: ObjectStatus) -> None:
    if payload and status != ObjectStatus.NORMAL:
        raise ValueError(f"an object with status {status.name} carries no payload")
    w.varint(len(payload))
    if payload:
        w.raw(payload)
    else:
        w.varint(status)


def _write_extensions(w: Writer, block: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> None:
    parse_extensions(block, version)  # refuse to send a block we would refuse to receive
    w.varint(len(block)).raw(block)


def encode_subgroup_object(obj: SubgroupObject, previous_id: int | None, has_extensions: bool,
                           version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
    """`previous_id` is the ID of the object written before on the same stream (None first):
    the wire carries `id - previous - 1` (the ID itself for the first object)."""
    delta = obj.object_id if previous_id is None else obj.object_id - previous_id - 1
    if delta < 0:
        raise ValueError(f"object {obj.object_id} after {previous_id}: IDs must increase")
    w = Writer(version).varint(delta)
    if has_extensions:
        _write_extensions(w, obj.extensions, version)
    elif obj.extensions:
        raise ValueError("the stream header says its objects carry no extensions")
    _write_payload(w, obj.payload, obj.status)
    return bytes(w.buf)


def contiguous_object_prefix(payload_length: int, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
    """The bytes before an object's payload on a stream without extensions, for the object right
    after the previous one (delta 0, what every Rust subscriber requires): an empty payload is
    a NORMAL-status object, whose status ends the object."""
    if payload_length == 0:
        return b"\x00\x00\x00"  # delta 0, length 0, status NORMAL: one byte each in both forms
    return b"\x00" + (lo.encode(payload_length) if version.has_request_streams else encode_varint(payload_length))


class SubgroupWriter:
    """Sans-IO writer of one subgroup stream: `header()` once, then `object()` per object, in
    increasing Object ID order; the caller FINs the stream after the last."""

    __slots__ = ("header_fields", "_previous", "version")

    def __init__(self, header: SubgroupHeader, version: IetfVersion = IetfVersion.DRAFT_14) -> None:
        self.header_fields = header
        self._previous: int | None = None
        self.version = version

    def header(self) -> bytes:
        return self.header_fields.encode(self.version)

    def object(self, obj: SubgroupObject) -> bytes:
        out = encode_subgroup_object(obj, self._previous, self.header_fields.has_extensions, self.version)
        self._previous = obj.object_id
        return out


@dataclass
class FetchHeader:
    request_id: int

    def encode(self) -> bytes:
        return encode_varint(FETCH_HEADER) + encode_varint(self.request_id)


@dataclass
class FetchObject:
    """One object of a FETCH_HEADER stream: each carries its full location and priority, and
    always an extension-block length (possibly 0)."""

    group_id: int
    subgroup_id: int
    object_id: int
    publisher_priority: int = 128
    payload: bytes = b""
    status: ObjectStatus = ObjectStatus.NORMAL
    extensions: bytes = b""

    def encode(self, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
        if self.publisher_priority is None and not version.has_priorityless_subgroups:
            raise ValueError(f"{version.name_str} subgroup headers carry a publisher priority")
        if self.publisher_priority is not None and not 0 <= self.publisher_priority <= 0xFF:
            raise ValueError(f"publisher priority {self.publisher_priority} is not one byte")
        w = Writer(version).varint(self.group_id).varint(self.subgroup_id).varint(self.object_id)
        w.u8(self.publisher_priority)
        _write_extensions(w, self.extensions)
        _write_payload(w, self.payload, self.status)
        return bytes(w.buf)


def _read_status(r: Reader) -> ObjectStatus:
    value = r.varint("object status")
    if value not in ObjectStatus._value2member_map_:
        raise IetfProtocolError(_VIOLATION, f"unknown object status {value:#x}")
    return ObjectStatus(value)


def _read_payload(r: Reader, max_object_size: int) -> tuple[bytes, ObjectStatus]:
    n = r.varint("object payload length")
    if n > max_object_size:
        raise IetfProtocolError(_VIOLATION, f"object of {n} bytes (limit {max_object_size})")
    if n == 0:
        return b"", _read_status(r)
    return r.take(n, "object payload"), ObjectStatus.NORMAL


# ------------------------------------------------------------------------------- datagrams
@dataclass
class ObjectDatagram:
    track_alias: int
    group_id: int
    object_id: int
    publisher_priority: int = 128
    payload: bytes = b""  # the rest of the datagram
    extensions: bytes = b""
    ends_group: bool = False
    has_extensions: bool = False  # written with an extension block even when it is empty

    def encode(self) -> bytes:
        with_ext = self.has_extensions or bool(self.extensions)
        # Object ID 0 travels as the "no Object ID" type, as aiomoqt writes it.
        kind = (1 if with_ext else 0) | (2 if self.ends_group else 0) | (_DATAGRAM_NO_OBJECT_ID if self.object_id == 0 else 0)
        w = Writer().varint(kind).varint(self.track_alias).varint(self.group_id)
        if self.object_id:
            w.varint(self.object_id)
        w.u8(self.publisher_priority)
        if with_ext:
            _write_extensions(w, self.extensions)
        return bytes(w.raw(self.payload).buf)


@dataclass
class ObjectDatagramStatus:
    track_alias: int
    group_id: int
    object_id: int
    publisher_priority: int = 128
    status: ObjectStatus = ObjectStatus.NORMAL
    extensions: bytes = b""
    has_extensions: bool = False

    def encode(self) -> bytes:
        with_ext = self.has_extensions or bool(self.extensions)
        w = Writer().varint(OBJECT_DATAGRAM_STATUS_TYPES.start | (1 if with_ext else 0))
        w.varint(self.track_alias).varint(self.group_id).varint(self.object_id).u8(self.publisher_priority)
        if with_ext:
            _write_extensions(w, self.extensions)
        return bytes(w.varint(self.status).buf)


def decode_datagram(data: bytes) -> ObjectDatagram | ObjectDatagramStatus:
    """One QUIC / WebTransport datagram's MOQT bytes (any WebTransport prefix already removed)."""
    r = Reader(data)
    try:
        kind = r.varint("datagram type")
        if kind in OBJECT_DATAGRAM_TYPES:
            alias, group = r.varint("track alias"), r.varint("group id")
            object_id = 0 if kind & _DATAGRAM_NO_OBJECT_ID else r.varint("object id")
            priority = r.u8("publisher priority")
            ext = read_extensions(r) if kind & 1 else b""
            payload = r.take(r.remaining, "object payload")
            return ObjectDatagram(alias, group, object_id, priority, payload, ext, bool(kind & 2), bool(kind & 1))
        if kind in OBJECT_DATAGRAM_STATUS_TYPES:
            alias, group, object_id = r.varint("track alias"), r.varint("group id"), r.varint("object id")
            priority = r.u8("publisher priority")
            ext = read_extensions(r) if kind & 1 else b""
            status = _read_status(r)
            r.done("OBJECT_DATAGRAM_STATUS")
            return ObjectDatagramStatus(alias, group, object_id, priority, status, ext, bool(kind & 1))
    except TruncatedInput as exc:  # a datagram is whole: ending early is malformed, not "wait"
        raise IetfProtocolError(_VIOLATION, f"datagram too short: {exc}") from exc
    raise IetfProtocolError(_VIOLATION, f"unknown datagram type {kind:#x}")


# ------------------------------------------------------------------------------- stream reader
class DataStreamReader:
    """Incremental reader of one incoming uni stream: SUBGROUP_HEADER or FETCH_HEADER.

    `feed(bytes)` returns the objects completed by those bytes; `header` is set as soon as the
    stream header is complete. `finish()` at FIN fails if the stream ended inside something.
    Holds at most one incomplete object: a payload length above `max_object_size` or an
    extension block above its bound is refused as soon as the length arrives."""

    __slots__ = ("_buf", "header", "max_object_size", "_previous_id", "_ended", "objects_read", "version")

    def __init__(self, max_object_size: int = MAX_FRAME_SIZE, version: IetfVersion = IetfVersion.DRAFT_14) -> None:
        self.version = version
        self._buf = bytearray()
        self.header: SubgroupHeader | FetchHeader | None = None
        self.max_object_size = max_object_size
        self._previous_id: int | None = None
        self._ended: ObjectStatus | None = None  # END_OF_GROUP / END_OF_TRACK seen on a subgroup
        self.objects_read = 0

    def feed(self, data: bytes) -> list[SubgroupObject | FetchObject]:
        self._buf += data
        out: list[SubgroupObject | FetchObject] = []
        r = Reader(self._buf, version=self.version)
        while True:
            start = r.pos
            try:
                if self.header is None:
                    self.header = self._read_header(r)
                    continue
                if not r.remaining:
                    break
                out.append(self._read_object(r))
            except TruncatedInput:
                r.pos = start
                break
        del self._buf[: r.pos]
        return out

    def finish(self) -> None:
        if self.header is None:
            raise IetfProtocolError(_VIOLATION, "data stream ended before its header")
        if self._buf:
            raise IetfProtocolError(_VIOLATION, f"data stream ended inside an object ({len(self._buf)} bytes)")

    def _read_header(self, r: Reader) -> SubgroupHeader | FetchHeader:
        kind = r.varint("the stream type")
        if kind == FETCH_HEADER:
            return FetchHeader(r.varint("request id"))
        if is_subgroup_header(kind, self.version):
            return SubgroupHeader.read(r, kind)
        raise IetfProtocolError(_VIOLATION, f"unknown data stream type {kind:#x}")

    def _read_object(self, r: Reader) -> SubgroupObject | FetchObject:
        header = self.header
        if isinstance(header, FetchHeader):
            group, subgroup, object_id = r.varint("group id"), r.varint("subgroup id"), r.varint("object id")
            priority = r.u8("publisher priority")
            ext = read_extensions(r)
            payload, status = _read_payload(r, self.max_object_size)
            self.objects_read += 1
            return FetchObject(group, subgroup, object_id, priority, payload, status, ext)
        assert header is not None
        delta = r.varint("object id delta")
        ext = read_extensions(r) if header.has_extensions else b""
        payload, status = _read_payload(r, self.max_object_size)
        # Only now is the object whole: state changes below happen once per object.
        object_id = delta if self._previous_id is None else self._previous_id + 1 + delta
        if object_id > MAX_VARINT:
            raise IetfProtocolError(_VIOLATION, "object id beyond 2^62 - 1")
        if self._ended is not None:
            raise IetfProtocolError(_VIOLATION, f"object {object_id} after {self._ended.name}")
        if status in (ObjectStatus.END_OF_GROUP, ObjectStatus.END_OF_TRACK):
            self._ended = status
        if header.subgroup_id is None:
            header.subgroup_id = object_id  # FIRST_OBJECT mode: the first object names the subgroup
        self._previous_id = object_id
        self.objects_read += 1
        return SubgroupObject(object_id, payload, status, ext)
