"""Draft-14 FETCH and its replies (spec §5.5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Self

from relay.protocol.ietf.coding import GroupOrder, Location, Params, Reader, Writer
from relay.protocol.ietf.control import ControlMessage, ErrorReply, MessageType, RequestIdMessage
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode


class FetchType(IntEnum):
    STANDALONE = 0x1
    RELATIVE_JOINING = 0x2  # joining_start = groups before the subscription's largest group
    ABSOLUTE_JOINING = 0x3  # joining_start = an absolute Group ID


@dataclass
class StandaloneRange:
    """What a standalone fetch names: a track and a range of locations. Whether `end` is
    inclusive is not pinned down for draft-14 (spec §11.3); 0.4.18 treats it as one past."""

    namespace: tuple[str, ...]
    track_name: str
    start: Location
    end: Location


@dataclass
class JoiningRef:
    """What a joining fetch names: an open SUBSCRIBE and how far before its start to go."""

    request_id: int
    start: int


@dataclass
class Fetch(ControlMessage):
    """Exactly one of `standalone` / `joining` is set, as `fetch_type` says."""

    TYPE = MessageType.FETCH

    request_id: int
    fetch_type: FetchType
    standalone: StandaloneRange | None = None
    joining: JoiningRef | None = None
    subscriber_priority: int = 128
    group_order: GroupOrder = GroupOrder.ASCENDING
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        if not 0 <= self.subscriber_priority <= 0xFF:
            raise ValueError(f"priority {self.subscriber_priority} is not one byte")
        w.varint(self.request_id).u8(self.subscriber_priority).u8(self.group_order).varint(self.fetch_type)
        if self.fetch_type == FetchType.STANDALONE:
            if self.standalone is None:
                raise ValueError("a standalone FETCH needs its range")
            s = self.standalone
            w.namespace(s.namespace).string(s.track_name).location(s.start).location(s.end)
        else:
            if self.joining is None:
                raise ValueError("a joining FETCH needs the subscription it joins")
            w.varint(self.joining.request_id).varint(self.joining.start)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        request_id = r.varint("request id")
        priority = r.u8("subscriber priority")
        order = r.group_order()
        kind = r.varint("fetch type")
        standalone: StandaloneRange | None = None
        joining: JoiningRef | None = None
        if kind == FetchType.STANDALONE:
            standalone = StandaloneRange(r.namespace(), r.string("track name"), r.location("start"), r.location("end"))
        elif kind in (FetchType.RELATIVE_JOINING, FetchType.ABSOLUTE_JOINING):
            joining = JoiningRef(r.varint("joining request id"), r.varint("joining start"))
        else:
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"unknown fetch type {kind:#x}")
        return cls(request_id, FetchType(kind), standalone, joining, priority, order, r.params())


@dataclass
class FetchOk(ControlMessage):
    TYPE = MessageType.FETCH_OK

    request_id: int
    group_order: GroupOrder
    end_of_track: bool
    end: Location  # 0.4.18 writes one past the last object it sends
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).u8(self.group_order).flag(self.end_of_track).location(self.end).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"), r.group_order(), r.flag("end of track"), r.location("end"), r.params())


@dataclass
class FetchError(ErrorReply):
    TYPE = MessageType.FETCH_ERROR


@dataclass
class FetchCancel(RequestIdMessage):
    TYPE = MessageType.FETCH_CANCEL

    request_id: int
