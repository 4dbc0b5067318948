"""FETCH and its replies (spec §5.5; from draft-15 priority and order are parameters, §7.1), and what a FETCH asks for (`FetchRange`, sans-IO:
the relay's driver is relay/protocol/ietf/fetching.py).

Ranges as the relay serves them: a standalone FETCH's start is inclusive, its end group
inclusive and its end object one past the last (0 = to the end of that group; 0.4.18 and
aiomoqt both use End Object 0 for "the whole group"). A joining FETCH is anchored at the first
group its subscription delivers, which our SUBSCRIBE serves from its first object, so nothing of
that group is missing: Relative Joining N = the N groups before it, Absolute Joining S = groups
S up to the one before it, whole groups either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Self

from relay.protocol.ietf import params as mp
from relay.protocol.ietf.coding import GroupOrder, Location, Params, Reader, Writer
from relay.protocol.ietf.control import ControlMessage, ErrorReply, MessageType, RequestIdMessage
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.params import MessageParam
from relay.protocol.ietf.version import IetfVersion

MAX_FETCH_GROUPS = 1024  # groups one FETCH may cover


class FetchRangeError(ValueError):
    """The FETCH names no valid range: FETCH_ERROR INVALID_RANGE with this reason."""


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
        w.request_head(self.request_id)
        if not w.version.has_message_params:
            w.u8(self.subscriber_priority).u8(self.group_order)
        w.varint(self.fetch_type)
        if self.fetch_type == FetchType.STANDALONE:
            if self.standalone is None:
                raise ValueError("a standalone FETCH needs its range")
            s = self.standalone
            w.namespace(s.namespace).string(s.track_name).location(s.start).location(s.end)
        else:
            if self.joining is None:
                raise ValueError("a joining FETCH needs the subscription it joins")
            w.varint(self.joining.request_id).varint(self.joining.start)
        if w.version.has_message_params:
            fields: Params = {MessageParam.SUBSCRIBER_PRIORITY: self.subscriber_priority,
                              MessageParam.GROUP_ORDER: int(self.group_order)}
            w.params(mp.merged(fields, self.params))
        else:
            w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        # Draft-20's rewrite (range in LOCATION_FILTER) is not what moq-rs 0.5.1 sends: it keeps
        # the Fetch Type on 20-22 too (spec 17-22 §5), and so does this reader.
        request_id = r.request_head()
        in_params = r.version.has_message_params
        priority = 128 if in_params else r.u8("subscriber priority")
        order = GroupOrder.DESCENDING if in_params else r.group_order()
        kind = r.varint("fetch type")
        standalone: StandaloneRange | None = None
        joining: JoiningRef | None = None
        if kind == FetchType.STANDALONE:
            standalone = StandaloneRange(r.namespace(), r.string("track name"), r.location("start"), r.location("end"))
        elif kind in (FetchType.RELATIVE_JOINING, FetchType.ABSOLUTE_JOINING):
            joining = JoiningRef(r.varint("joining request id"), r.varint("joining start"))
        else:
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"unknown fetch type {kind:#x}")
        params = r.params()
        if in_params:  # Rust's defaults when absent: 128, Descending
            priority, order = mp.take_priority(params), mp.take_group_order(params)
        return cls(request_id, FetchType(kind), standalone, joining, priority, order, params)


@dataclass
class FetchOk(ControlMessage):
    TYPE = MessageType.FETCH_OK

    request_id: int
    group_order: GroupOrder
    end_of_track: bool
    end: Location  # 0.4.18 writes one past the last object it sends
    params: Params = field(default_factory=dict)
    track_extensions: bytes = b""  # draft-16: the trailing block (raw pairs)

    def write(self, w: Writer) -> None:
        """Draft-15 on: no group order field (Rust writes no parameter for it either)."""
        w.reply_id(self.request_id)
        if not w.version.has_message_params:
            w.u8(self.group_order)
        w.flag(self.end_of_track).location(self.end).params(self.params)
        if self.track_extensions:
            if not w.version.has_namespace_stream:
                raise ValueError(f"track extensions do not exist in {w.version.name_str}")
            w.raw(self.track_extensions)

    @classmethod
    def read(cls, r: Reader) -> Self:
        request_id = r.reply_id()
        if not r.version.has_message_params:
            return cls(request_id, r.group_order(), r.flag("end of track"), r.location("end"), r.params())
        end_of_track, end, params = r.flag("end of track"), r.location("end"), r.params()
        order = mp.take_group_order(params)
        extensions = mp.read_track_extensions(r) if r.version.has_namespace_stream else b""
        return cls(request_id, order, end_of_track, end, params, extensions)


@dataclass
class FetchError(ErrorReply):
    TYPE = MessageType.FETCH_ERROR


@dataclass
class FetchCancel(RequestIdMessage):
    TYPE = MessageType.FETCH_CANCEL
    UNTIL = IetfVersion.DRAFT_16  # from 17 the subscriber resets the FETCH's stream instead

    request_id: int


@dataclass(frozen=True)
class FetchRange:
    """Groups `first`..`last` (inclusive), from object `start_object` in the first group and up
    to `end_object` (exclusive, None = all) in the last, sent in `descending` order or not."""

    first: int
    last: int
    start_object: int = 0
    end_object: int | None = None
    descending: bool = False

    def groups(self) -> list[int]:
        seqs = list(range(self.first, self.last + 1))
        return seqs[::-1] if self.descending else seqs

    def wants(self, group: int, object_id: int) -> bool:
        if group == self.first and object_id < self.start_object:
            return False
        return not (group == self.last and self.end_object is not None and object_id >= self.end_object)

    def end_location(self, held: int | None) -> Location:
        """FETCH_OK's End Location: one past the last object (what 0.4.18 writes), `held` being
        how many objects of the last group the relay has (None: not known yet)."""
        if self.end_object is not None:
            return Location(self.last, self.end_object if held is None else min(held, self.end_object))
        return Location(self.last, held or 0)


def _checked(first: int, last: int, order: GroupOrder, start_object: int = 0,
             end_object: int | None = None) -> FetchRange:
    if last - first + 1 > MAX_FETCH_GROUPS:
        raise FetchRangeError(f"more than {MAX_FETCH_GROUPS} groups")
    return FetchRange(first, last, start_object, end_object, descending=order == GroupOrder.DESCENDING)


def standalone_range(s: StandaloneRange, order: GroupOrder) -> FetchRange:
    """Raises FetchRangeError when the end is before the start."""
    end_object = s.end.object or None
    if s.end.group < s.start.group or (s.end.group == s.start.group and end_object is not None
                                       and end_object <= s.start.object):
        raise FetchRangeError(f"end {tuple(s.end)} is not after start {tuple(s.start)}")
    return _checked(s.start.group, s.end.group, order, s.start.object, end_object)


def joining_range(kind: FetchType, start: int, anchor: int, order: GroupOrder) -> FetchRange | None:
    """The groups before `anchor` (the subscription's first group) a joining FETCH asks for;
    None when there are none (Relative 0, or an absolute start at or after the anchor)."""
    first = max(0, anchor - start) if kind == FetchType.RELATIVE_JOINING else start
    if first >= anchor:
        return None
    return _checked(first, anchor - 1, order)
