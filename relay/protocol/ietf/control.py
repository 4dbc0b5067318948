"""Control-message framing (spec §3.2, the same on every draft): `Type (i)`, `Length (16)`,
payload; from draft-17 the type is the leading-ones varint, and the framing is the same on the
control stream and on each request stream.

`ControlMessage` is the base of every message dataclass: `encode(version)` gives the framed
bytes, `decode(payload, version)` parses the payload the framer cut out (draft-14 unless told).
A class names the drafts it exists in (`SINCE`, `UNTIL`): the same type number means another
message on another draft (0x07 is PUBLISH_NAMESPACE_OK on 14, REQUEST_OK from 15). From draft-15
the generic replies take over: every `ErrorReply` goes out as REQUEST_ERROR and every `OkReply`
as REQUEST_OK (spec §7.1), so the session names the reply it means and the draft picks the wire.
`ControlFramer` is the sans-IO splitter of a control stream: feed it bytes in any chunking, get
whole (type, payload) frames back.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Self

from relay.protocol.ietf import varint as lo
from relay.protocol.ietf.coding import Params, Reader, Writer
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.version import IetfVersion
from relay.varint import decode_varint, encode_varint

MAX_CONTROL_MESSAGE = 0xFFFF  # the 16-bit Length field's ceiling


class MessageType(IntEnum):
    SUBSCRIBE_UPDATE = 0x02
    SUBSCRIBE = 0x03
    SUBSCRIBE_OK = 0x04
    SUBSCRIBE_ERROR = 0x05
    PUBLISH_NAMESPACE = 0x06
    PUBLISH_NAMESPACE_OK = 0x07
    PUBLISH_NAMESPACE_ERROR = 0x08
    PUBLISH_NAMESPACE_DONE = 0x09
    UNSUBSCRIBE = 0x0A
    PUBLISH_DONE = 0x0B
    PUBLISH_NAMESPACE_CANCEL = 0x0C
    TRACK_STATUS = 0x0D
    TRACK_STATUS_OK = 0x0E
    TRACK_STATUS_ERROR = 0x0F
    GOAWAY = 0x10
    SUBSCRIBE_NAMESPACE = 0x11
    SUBSCRIBE_NAMESPACE_OK = 0x12
    SUBSCRIBE_NAMESPACE_ERROR = 0x13
    UNSUBSCRIBE_NAMESPACE = 0x14
    MAX_REQUEST_ID = 0x15
    FETCH = 0x16
    FETCH_CANCEL = 0x17
    FETCH_OK = 0x18
    FETCH_ERROR = 0x19
    REQUESTS_BLOCKED = 0x1A
    PUBLISH = 0x1D
    PUBLISH_OK = 0x1E
    PUBLISH_ERROR = 0x1F
    CLIENT_SETUP = 0x20
    SERVER_SETUP = 0x21
    # Draft-15 on: the same numbers, other messages (aliases of the names above).
    REQUEST_ERROR = 0x05
    REQUEST_OK = 0x07
    NAMESPACE = 0x08  # draft-16, on a SUBSCRIBE_NAMESPACE stream
    NAMESPACE_DONE = 0x0E  # draft-16, likewise
    REQUEST_UPDATE = 0x02  # draft-17 on: SUBSCRIBE_UPDATE's successor, on the request's stream
    SETUP = 0x2F00  # draft-17 on: one SETUP each way, on a uni stream of each side
    SUBSCRIBE_NAMESPACE_18 = 0x50  # draft-18 on: SUBSCRIBE_NAMESPACE renumbered, without options


# type -> the message classes of that number (one per range of drafts), filled by
# ControlMessage subclasses as their modules are imported (relay.protocol.ietf.messages imports
# them all).
MESSAGE_CLASSES: dict[int, list[type[ControlMessage]]] = {}


class ControlMessage(ABC):
    """A control message. Subclasses are dataclasses that set TYPE and implement the payload;
    `SINCE` / `UNTIL` bound the drafts the class is read on (inclusive)."""

    TYPE: ClassVar[MessageType]
    SINCE: ClassVar[IetfVersion] = IetfVersion.DRAFT_14
    UNTIL: ClassVar[IetfVersion | None] = None
    NAME: ClassVar[str] = ""  # the spec's name (REQUEST_OK), set from the class name

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "NAME" not in cls.__dict__:
            cls.NAME = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).upper()
        if "TYPE" in cls.__dict__:
            MESSAGE_CLASSES.setdefault(cls.TYPE, []).append(cls)

    @classmethod
    def exists_in(cls, version: IetfVersion) -> bool:
        return cls.SINCE <= version and (cls.UNTIL is None or version <= cls.UNTIL)

    def wire_type(self, version: IetfVersion) -> int:
        """The type this message goes out as on `version`; ValueError when the draft has none."""
        if not self.exists_in(version):
            raise ValueError(f"{type(self).__name__} does not exist in {version.name_str}")
        return self.TYPE

    @abstractmethod
    def write(self, w: Writer) -> None:
        """The payload (after the type and length); `w.version` is the draft."""

    @classmethod
    @abstractmethod
    def read(cls, r: Reader) -> Self:
        """The message from its payload (`r.version` is the draft); raises the IETF protocol error."""

    def encode_payload(self, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
        w = Writer(version)
        self.write(w)
        return bytes(w.buf)

    def encode(self, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
        """The framed message as it goes on the control stream (write it in one send: §3.2)."""
        return frame_message(self.wire_type(version), self.encode_payload(version), version)

    @classmethod
    def decode(cls, payload: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> Self:
        """Parse one payload; the whole payload must be consumed (Rust: WrongSize otherwise)."""
        r = Reader(payload, version=version)
        message = cls.read(r)
        r.done(cls.NAME)
        return message


def message_class(kind: int, version: IetfVersion) -> type[ControlMessage] | None:
    for cls in MESSAGE_CLASSES.get(kind, ()):
        if cls.exists_in(version):
            return cls
    return None


def frame_message(kind: int, payload: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
    if len(payload) > MAX_CONTROL_MESSAGE:
        raise ValueError(f"control message payload of {len(payload)} bytes (limit {MAX_CONTROL_MESSAGE})")
    kind_bytes = lo.encode(kind) if version.has_request_streams else encode_varint(kind)
    return kind_bytes + len(payload).to_bytes(2, "big") + payload


def decode_message(kind: int, payload: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> ControlMessage:
    """The message of type `kind` on `version`; a type unknown there is a protocol violation
    (as in Rust)."""
    cls = message_class(kind, version)
    if cls is None:
        raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION,
                                f"unknown control message type {kind:#x} on {version.name_str}")
    return cls.decode(payload, version)


class ControlFramer:
    """Splits a control stream's bytes into (type, payload) frames, however they were chunked.

    Holds at most one incomplete frame: a Length above `max_message_size` is refused as soon as
    its two bytes arrive, before any of its payload is buffered."""

    __slots__ = ("_buf", "max_message_size", "_lo")

    def __init__(self, max_message_size: int = MAX_CONTROL_MESSAGE,
                 version: IetfVersion = IetfVersion.DRAFT_14) -> None:
        self._buf = bytearray()
        self.max_message_size = max_message_size
        self._lo = version.has_request_streams  # the leading-ones varint (draft-17 on)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        while True:
            got = lo.decode(self._buf, pos) if self._lo else decode_varint(self._buf, pos)
            if got is None:
                break
            if got is lo.BAD_FORM:  # not reachable: 7-byte types are allowed here (no type is that big)
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, "malformed message type")
            kind, after_type = got
            if after_type + 2 > len(self._buf):
                break
            length = int.from_bytes(self._buf[after_type : after_type + 2], "big")
            if length > self.max_message_size:
                raise IetfProtocolError(
                    SessionCode.PROTOCOL_VIOLATION,
                    f"control message {kind:#x} of {length} bytes (limit {self.max_message_size})",
                )
            end = after_type + 2 + length
            if end > len(self._buf):
                break
            frames.append((kind, bytes(self._buf[after_type + 2 : end])))
            pos = end
        del self._buf[:pos]
        return frames

    def finish(self) -> None:
        """The stream ended: a partial frame left over is a truncated message."""
        if self._buf:
            raise IetfProtocolError(
                SessionCode.PROTOCOL_VIOLATION, f"control stream ended inside a message ({len(self._buf)} bytes)"
            )


def from_props(r: Reader) -> Params:
    """A trailing Track Properties block (draft-17 on: pairs without a count, to the end of the
    message, even/odd rule, delta-coded; unknown ones are kept, to be skipped)."""
    props: Params = {}
    r.start_pairs()
    while r.remaining:
        if len(props) >= 64:
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, "more than 64 track properties")
        r.key_value(props, "track property")
    return props


class RequestIdMessage(ControlMessage):
    """Base of the messages whose whole payload is one Request ID."""

    request_id: int

    def write(self, w: Writer) -> None:
        w.varint(self.request_id)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"))  # type: ignore[call-arg]


# The relay names request errors by the draft-14 registry; draft-17 renumbered four of them
# (DOES_NOT_EXIST 0x10, INVALID_RANGE 0x11, MALFORMED_AUTH_TOKEN 0x4, EXPIRED_AUTH_TOKEN 0x5).
_CODES_17 = {0x4: 0x10, 0x5: 0x11, 0x10: 0x4, 0x12: 0x5}
_CODES_FROM_17 = {wire: ours for ours, wire in _CODES_17.items()}


@dataclass
class ErrorReply(ControlMessage):
    """Base of the *_ERROR replies: `Request ID (i), Error Code (i), [Retry Interval (i),]
    Reason Phrase`; each draft-14 reply only names its type, and from draft-15 all of them go
    out as REQUEST_ERROR (the retry interval, in ms with 0 = never, from draft-16)."""

    request_id: int
    error_code: int
    reason: str = ""
    retry_interval: int = 0

    UNTIL = IetfVersion.DRAFT_14  # read as these only on draft-14; RequestError after

    def wire_type(self, version: IetfVersion) -> int:
        return MessageType.REQUEST_ERROR if version.has_message_params else self.TYPE

    def write(self, w: Writer) -> None:
        code = _CODES_17.get(self.error_code, self.error_code) if w.version.has_request_streams else self.error_code
        w.reply_id(self.request_id).varint(code)
        if w.version.has_retry_interval:
            w.varint(self.retry_interval)
        w.string(self.reason)

    @classmethod
    def read(cls, r: Reader) -> Self:
        request_id, code = r.reply_id(), r.varint("error code")
        if r.version.has_request_streams:
            code = _CODES_FROM_17.get(code, code)
        retry = r.varint("retry interval") if r.version.has_retry_interval else 0
        return cls(request_id, code, r.string("reason phrase"), retry)  # type: ignore[call-arg]


@dataclass
class RequestError(ErrorReply):
    """REQUEST_ERROR (draft-15 on): the answer to any failed request."""

    TYPE = MessageType.REQUEST_ERROR
    SINCE = IetfVersion.DRAFT_15
    UNTIL = None


@dataclass
class OkReply(ControlMessage):
    """Base of the replies that are only a Request ID on draft-14 (PUBLISH_NAMESPACE_OK,
    SUBSCRIBE_NAMESPACE_OK); from draft-15 they go out as REQUEST_OK, `Request ID, Parameters`."""

    request_id: int
    params: Params = field(default_factory=dict)

    UNTIL = IetfVersion.DRAFT_14

    def wire_type(self, version: IetfVersion) -> int:
        return MessageType.REQUEST_OK if version.has_message_params else self.TYPE

    def write(self, w: Writer) -> None:
        w.reply_id(self.request_id)
        if w.version.has_message_params:
            w.params(self.params)  # no Track Properties on 18+: Rust reads none (spec 17-22 §3)

    @classmethod
    def read(cls, r: Reader) -> Self:
        request_id = r.reply_id()
        params = r.params() if r.version.has_message_params else {}
        if r.version.has_first_object_bit and r.remaining:  # draft-18's trailing Track Properties
            from_props(r)
        return cls(request_id, params)  # type: ignore[call-arg]


@dataclass
class RequestOk(OkReply):
    """REQUEST_OK (draft-15 on): PUBLISH_NAMESPACE / SUBSCRIBE_NAMESPACE accepted, or the answer
    to SUBSCRIBE_UPDATE and TRACK_STATUS (with LARGEST_OBJECT when there is content)."""

    TYPE = MessageType.REQUEST_OK
    SINCE = IetfVersion.DRAFT_15
    UNTIL = None
