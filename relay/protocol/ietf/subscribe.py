"""Subscription messages (spec §5.3, §5.4, §5.7, §7.1-7.2): SUBSCRIBE and its replies and
follow-ups, the publisher-initiated PUBLISH family, and TRACK_STATUS (SUBSCRIBE's layout).

One dataclass per message for every draft: draft-14 writes the fields in place; from draft-15
they are message parameters (relay.protocol.ietf.params) and `params` keeps only the others.
Draft-16 drops the group order from SUBSCRIBE_OK / PUBLISH and lets them end in a Track
Extensions block (`track_extensions`, raw)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from relay.protocol.ietf import params as mp
from relay.protocol.ietf.coding import FilterType, GroupOrder, Location, Params, Reader, Writer
from relay.protocol.ietf.control import ControlMessage, ErrorReply, MessageType, RequestIdMessage
from relay.protocol.ietf.errors import IetfProtocolError
from relay.protocol.ietf.params import MessageParam
from relay.protocol.ietf.version import IetfVersion


@dataclass
class SubscriptionFilter:
    """`Filter Type (i)`, then a Start Location for AbsoluteStart/AbsoluteRange and an End Group
    (inclusive) for AbsoluteRange."""

    type: FilterType = FilterType.LARGEST_OBJECT
    start: Location | None = None
    end_group: int | None = None

    def write(self, w: Writer) -> None:
        w.varint(self.type)
        if self.type in (FilterType.ABSOLUTE_START, FilterType.ABSOLUTE_RANGE):
            if self.start is None:
                raise ValueError(f"filter {self.type.name} needs a start location")
            w.location(self.start)
        if self.type == FilterType.ABSOLUTE_RANGE:
            if self.end_group is None:
                raise ValueError("filter ABSOLUTE_RANGE needs an end group")
            w.varint(self.end_group)

    @classmethod
    def read(cls, r: Reader) -> SubscriptionFilter:
        kind = r.filter_type()
        start = r.location("start") if kind in (FilterType.ABSOLUTE_START, FilterType.ABSOLUTE_RANGE) else None
        end_group = r.varint("end group") if kind == FilterType.ABSOLUTE_RANGE else None
        return cls(kind, start, end_group)

    def to_param(self) -> bytes:
        w = Writer()
        self.write(w)
        return bytes(w.buf)

    @classmethod
    def take(cls, params: Params) -> SubscriptionFilter:
        """The SUBSCRIPTION_FILTER parameter (default LargestObject), popped from `params`."""
        inner = mp.take_inner(params, MessageParam.SUBSCRIPTION_FILTER)
        if inner is None:
            return cls()
        out = cls.read(inner)
        inner.done("SUBSCRIPTION_FILTER")
        return out


def _request_params(priority: int, order: GroupOrder | None, forward: bool,
                    filter: SubscriptionFilter | None, extra: Params) -> Params:
    """SUBSCRIBE / PUBLISH_OK / SUBSCRIBE_UPDATE fields as draft-15+ parameters (as Rust writes
    them: all of them, even at their defaults)."""
    fields: Params = {MessageParam.FORWARD: int(forward), MessageParam.SUBSCRIBER_PRIORITY: _priority(priority)}
    if filter is not None:
        fields[MessageParam.SUBSCRIPTION_FILTER] = filter.to_param()
    if order is not None:
        fields[MessageParam.GROUP_ORDER] = int(order)
    return mp.merged(fields, extra)


@dataclass
class Subscribe(ControlMessage):
    TYPE = MessageType.SUBSCRIBE

    request_id: int
    namespace: tuple[str, ...]
    track_name: str
    subscriber_priority: int = 128  # lower = more important (IETF order)
    group_order: GroupOrder = GroupOrder.DESCENDING
    forward: bool = True
    filter: SubscriptionFilter = field(default_factory=SubscriptionFilter)
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).namespace(self.namespace).string(self.track_name)
        if w.version.has_message_params:
            w.params(_request_params(self.subscriber_priority, self.group_order, self.forward, self.filter,
                                     self.params))
            return
        w.u8(_priority(self.subscriber_priority)).u8(self.group_order).flag(self.forward)
        self.filter.write(w)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, namespace, name, params = r.varint("request id"), r.namespace(), r.string("track name"), r.params()
            return cls(request_id, namespace, name, mp.take_priority(params), mp.take_group_order(params),
                       mp.take_forward(params), SubscriptionFilter.take(params), params)
        return cls(
            r.varint("request id"),
            r.namespace(),
            r.string("track name"),
            r.u8("subscriber priority"),
            r.group_order(),
            r.flag("forward"),
            SubscriptionFilter.read(r),
            r.params(),
        )


@dataclass
class SubscribeOk(ControlMessage):
    TYPE = MessageType.SUBSCRIBE_OK

    request_id: int
    track_alias: int
    expires: int = 0  # ms; 0 = never (Rust subscribers require 0)
    group_order: GroupOrder = GroupOrder.DESCENDING
    largest: Location | None = None  # Content Exists = 1 iff set
    params: Params = field(default_factory=dict)
    track_extensions: bytes = b""  # draft-16: the trailing block (raw pairs)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).varint(self.track_alias)
        if w.version.has_message_params:
            fields: Params = {}
            mp.put_largest(fields, self.largest)
            if w.version.has_group_order_in_reply:
                mp.put_int(fields, MessageParam.GROUP_ORDER, self.group_order)
            w.params(mp.merged(fields, self.params))
            _write_track_extensions(w, self.track_extensions)
            return
        w.varint(self.expires).u8(self.group_order)
        _write_largest(w, self.largest)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, alias, params = r.varint("request id"), r.varint("track alias"), r.params()
            largest, order = mp.take_largest(params), mp.take_group_order(params)
            extensions = mp.read_track_extensions(r) if r.version.has_namespace_stream else b""
            return cls(request_id, alias, 0, order, largest, params, extensions)
        return cls(
            r.varint("request id"),
            r.varint("track alias"),
            r.varint("expires"),
            r.group_order(),
            _read_largest(r),
            r.params(),
        )


@dataclass
class SubscribeError(ErrorReply):
    TYPE = MessageType.SUBSCRIBE_ERROR


@dataclass
class SubscribeUpdate(ControlMessage):
    """Both Rust and aiomoqt put two IDs first: the update's own, then the subscription's."""

    TYPE = MessageType.SUBSCRIBE_UPDATE

    request_id: int
    subscription_request_id: int
    start: Location
    end_group: int  # the wire value: draft text says last group + 1, 0 = open-ended (⚠ unverified)
    subscriber_priority: int = 128
    forward: bool = True
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).varint(self.subscription_request_id)
        if w.version.has_message_params:
            update = SubscriptionFilter(FilterType.ABSOLUTE_RANGE, self.start, self.end_group)
            w.params(_request_params(self.subscriber_priority, None, self.forward, update, self.params))
            return
        w.location(self.start)
        w.varint(self.end_group).u8(_priority(self.subscriber_priority)).flag(self.forward).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, subscription, params = r.varint("request id"), r.varint("subscription request id"), r.params()
            priority, forward = mp.take_priority(params), mp.take_forward(params)
            update = SubscriptionFilter.take(params)
            start = update.start or Location(0, 0)
            return cls(request_id, subscription, start, update.end_group or 0, priority, forward, params)
        return cls(
            r.varint("request id"),
            r.varint("subscription request id"),
            r.location("start"),
            r.varint("end group"),
            r.u8("subscriber priority"),
            r.flag("forward"),
            r.params(),
        )


@dataclass
class Unsubscribe(RequestIdMessage):
    TYPE = MessageType.UNSUBSCRIBE

    request_id: int


@dataclass
class PublishDone(ControlMessage):
    """Draft-14's PUBLISH_DONE (formerly SUBSCRIBE_DONE): the publisher ends a subscription."""

    TYPE = MessageType.PUBLISH_DONE

    request_id: int
    status_code: int
    stream_count: int = 0  # data streams the publisher opened for this subscription
    reason: str = ""

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).varint(self.status_code).varint(self.stream_count).string(self.reason)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"), r.varint("status code"), r.varint("stream count"), r.string("reason"))

    @classmethod
    def decode(cls, payload: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> Self:
        """Also reads v0.9.6's swapped order (`Status, Reason, Stream Count`, spec §8.4) when
        the draft-14 order does not parse; the draft-14 error is the one raised if neither does."""
        try:
            return super().decode(payload, version)
        except IetfProtocolError as strict_error:
            if version.has_message_params:  # v0.9.6 speaks draft-14 only
                raise
            r = Reader(payload)
            try:
                request_id, status = r.varint("request id"), r.varint("status code")
                reason = r.string("reason")
                message = cls(request_id, status, r.varint("stream count"), reason)
                r.done("PUBLISH_DONE")
            except IetfProtocolError:
                raise strict_error from None
            return message


SubscribeDone = PublishDone  # draft-13's name


@dataclass
class Publish(ControlMessage):
    TYPE = MessageType.PUBLISH

    request_id: int
    namespace: tuple[str, ...]
    track_name: str
    track_alias: int
    group_order: GroupOrder = GroupOrder.DESCENDING
    largest: Location | None = None  # Content Exists = 1 iff set
    forward: bool = True
    params: Params = field(default_factory=dict)
    track_extensions: bytes = b""  # draft-16: the trailing block (raw pairs)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).namespace(self.namespace).string(self.track_name)
        w.varint(self.track_alias)
        if w.version.has_message_params:
            fields: Params = {MessageParam.FORWARD: int(self.forward)}
            mp.put_largest(fields, self.largest)
            if w.version.has_group_order_in_reply:
                mp.put_int(fields, MessageParam.GROUP_ORDER, self.group_order)
            w.params(mp.merged(fields, self.params))
            _write_track_extensions(w, self.track_extensions)
            return
        w.u8(self.group_order)
        _write_largest(w, self.largest)
        w.flag(self.forward).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, namespace, name = r.varint("request id"), r.namespace(), r.string("track name")
            alias, params = r.varint("track alias"), r.params()
            order, largest, forward = mp.take_group_order(params), mp.take_largest(params), mp.take_forward(params)
            extensions = mp.read_track_extensions(r) if r.version.has_namespace_stream else b""
            return cls(request_id, namespace, name, alias, order, largest, forward, params, extensions)
        return cls(
            r.varint("request id"),
            r.namespace(),
            r.string("track name"),
            r.varint("track alias"),
            r.group_order(),
            _read_largest(r),
            r.flag("forward"),
            r.params(),
        )


@dataclass
class PublishOk(ControlMessage):
    TYPE = MessageType.PUBLISH_OK

    request_id: int
    forward: bool = True
    subscriber_priority: int = 128
    group_order: GroupOrder = GroupOrder.DESCENDING
    filter: SubscriptionFilter = field(default_factory=SubscriptionFilter)
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id)
        if w.version.has_message_params:
            w.params(_request_params(self.subscriber_priority, self.group_order, self.forward, self.filter,
                                     self.params))
            return
        w.flag(self.forward).u8(_priority(self.subscriber_priority)).u8(self.group_order)
        self.filter.write(w)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, params = r.varint("request id"), r.params()
            return cls(request_id, mp.take_forward(params), mp.take_priority(params), mp.take_group_order(params),
                       SubscriptionFilter.take(params), params)
        return cls(
            r.varint("request id"),
            r.flag("forward"),
            r.u8("subscriber priority"),
            r.group_order(),
            SubscriptionFilter.read(r),
            r.params(),
        )


@dataclass
class PublishError(ErrorReply):
    TYPE = MessageType.PUBLISH_ERROR


@dataclass
class TrackStatus(Subscribe):
    """TRACK_STATUS: SUBSCRIBE's layout under another type (spec §5.7)."""

    TYPE = MessageType.TRACK_STATUS


@dataclass
class TrackStatusOk(SubscribeOk):
    """TRACK_STATUS_OK: SUBSCRIBE_OK's layout (aiomoqt; Rust does not implement it). Draft-14
    only: from draft-15 REQUEST_OK answers TRACK_STATUS."""

    TYPE = MessageType.TRACK_STATUS_OK
    UNTIL = IetfVersion.DRAFT_14


@dataclass
class TrackStatusError(ErrorReply):
    TYPE = MessageType.TRACK_STATUS_ERROR


def _priority(value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"priority {value} is not one byte")
    return value


def _write_largest(w: Writer, largest: Location | None) -> None:
    w.flag(largest is not None)
    if largest is not None:
        w.location(largest)


def _write_track_extensions(w: Writer, block: bytes) -> None:
    if block and not w.version.has_namespace_stream:
        raise ValueError(f"track extensions do not exist in {w.version.name_str}")
    w.raw(block)


def _read_largest(r: Reader) -> Location | None:
    return r.location("largest location") if r.flag("content exists") else None
