"""Draft-14 control-message framing (spec §3.2): `Type (i)`, `Length (16)`, payload.

`ControlMessage` is the base of every message dataclass: `encode()` gives the framed bytes,
`decode(payload)` parses the payload the framer cut out. `ControlFramer` is the sans-IO splitter
of a control stream: feed it bytes in any chunking, get whole (type, payload) frames back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self

from relay.protocol.ietf.coding import Reader, Writer
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
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


# type -> message class, filled by ControlMessage subclasses as their modules are imported
# (relay.protocol.ietf.messages imports them all).
MESSAGE_CLASSES: dict[int, type[ControlMessage]] = {}


class ControlMessage(ABC):
    """A control message. Subclasses are dataclasses that set TYPE and implement the payload."""

    TYPE: ClassVar[MessageType]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            MESSAGE_CLASSES[cls.TYPE] = cls

    @abstractmethod
    def write(self, w: Writer) -> None:
        """The payload (after the type and length)."""

    @classmethod
    @abstractmethod
    def read(cls, r: Reader) -> Self:
        """The message from its payload; raises the IETF protocol error."""

    def encode_payload(self) -> bytes:
        w = Writer()
        self.write(w)
        return bytes(w.buf)

    def encode(self) -> bytes:
        """The framed message as it goes on the control stream (write it in one send: §3.2)."""
        return frame_message(self.TYPE, self.encode_payload())

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse one payload; the whole payload must be consumed (Rust: WrongSize otherwise)."""
        r = Reader(payload)
        message = cls.read(r)
        r.done(cls.TYPE.name)
        return message


def frame_message(kind: int, payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_MESSAGE:
        raise ValueError(f"control message payload of {len(payload)} bytes (limit {MAX_CONTROL_MESSAGE})")
    return encode_varint(kind) + len(payload).to_bytes(2, "big") + payload


def decode_message(kind: int, payload: bytes) -> ControlMessage:
    """The message of type `kind`; an unknown type is a protocol violation (as in Rust)."""
    cls = MESSAGE_CLASSES.get(kind)
    if cls is None:
        raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"unknown control message type {kind:#x}")
    return cls.decode(payload)


class ControlFramer:
    """Splits a control stream's bytes into (type, payload) frames, however they were chunked.

    Holds at most one incomplete frame: a Length above `max_message_size` is refused as soon as
    its two bytes arrive, before any of its payload is buffered."""

    __slots__ = ("_buf", "max_message_size")

    def __init__(self, max_message_size: int = MAX_CONTROL_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_message_size = max_message_size

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        while True:
            got = decode_varint(self._buf, pos)
            if got is None:
                break
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


class RequestIdMessage(ControlMessage):
    """Base of the messages whose whole payload is one Request ID."""

    request_id: int

    def write(self, w: Writer) -> None:
        w.varint(self.request_id)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"))  # type: ignore[call-arg]


@dataclass
class ErrorReply(ControlMessage):
    """Base of the *_ERROR replies: `Request ID (i), Error Code (i), Reason Phrase`; each reply
    only names its type."""

    request_id: int
    error_code: int
    reason: str = ""

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).varint(self.error_code).string(self.reason)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"), r.varint("error code"), r.string("reason phrase"))  # type: ignore[call-arg]
