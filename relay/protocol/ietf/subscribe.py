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
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.params import MessageParam
from relay.protocol.ietf.version import IetfVersion

_VIOLATION_CODE = SessionCode.PROTOCOL_VIOLATION


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

    def to_param(self, version: IetfVersion = IetfVersion.DRAFT_14) -> bytes:
        """The parameter's value on `version`: the field layout inside the bytes up to draft-19
        (from 17 the end group a delta from the start); 0-4 varints on 20-21; on 22 the typed
        form, which goes on the wire without a length."""
        w = Writer(version)
        if version.has_varint_filter:
            fields = self._varint_fields()
            if version.has_typed_filter:
                if self.type == FilterType.LARGEST_OBJECT:
                    return bytes(w.varint(0x05).buf)  # Next Object
                w.varint(len(fields))  # types 1-3 take 1-3 values
            for value in fields:
                w.varint(value)
            return bytes(w.buf)
        if version.has_request_streams and self.type == FilterType.ABSOLUTE_RANGE:
            assert self.start is not None and self.end_group is not None
            w.varint(self.type).location(self.start).varint(self.end_group - self.start.group)
            return bytes(w.buf)
        self.write(w)
        return bytes(w.buf)

    def _varint_fields(self) -> list[int]:
        """Draft-20's shapes: [g] relative start (0 = the next group), [0, 0] Next Object,
        [g, o] absolute start, [g, o, Δ] an inclusive end group g + Δ."""
        if self.type == FilterType.NEXT_GROUP_START:
            return [0]
        if self.type == FilterType.LARGEST_OBJECT:
            return [0, 0]
        assert self.start is not None
        if self.type == FilterType.ABSOLUTE_START:
            return [self.start.group, self.start.object]
        assert self.end_group is not None
        return [self.start.group, self.start.object, self.end_group - self.start.group]

    @classmethod
    def take(cls, params: Params, version: IetfVersion = IetfVersion.DRAFT_14) -> SubscriptionFilter:
        """The SUBSCRIPTION_FILTER parameter (default LargestObject), popped from `params`."""
        inner = mp.take_inner(params, MessageParam.SUBSCRIPTION_FILTER, version)
        if inner is None:
            return cls()
        if version.has_varint_filter:
            out = cls._from_varints(inner, version)
        else:
            out = cls.read(inner)
            if version.has_request_streams and out.end_group is not None and out.start is not None:
                out.end_group += out.start.group  # a delta from the start group from 17 on
        inner.done("LOCATION_FILTER")
        return out

    @classmethod
    def _from_varints(cls, r: Reader, version: IetfVersion) -> SubscriptionFilter:
        if version.has_typed_filter:
            kind = r.varint("location filter type")
            if kind == 0x05:
                return cls(FilterType.LARGEST_OBJECT)
            if kind == 0x00:
                return cls()
        fields: list[int] = []
        while r.remaining:
            if len(fields) == 4:
                raise IetfProtocolError(_VIOLATION_CODE, "LOCATION_FILTER of more than 4 values")
            fields.append(r.varint("location filter value"))
        if not fields:
            return cls()
        if len(fields) == 1:  # relative: 0 = the next group, 1 or more = a group already begun
            return cls(FilterType.NEXT_GROUP_START if fields[0] == 0 else FilterType.LARGEST_OBJECT)
        if fields == [0, 0] and not version.has_typed_filter:
            return cls(FilterType.LARGEST_OBJECT)  # Next Object: we serve from the next whole group
        start = Location(fields[0], fields[1])
        if len(fields) == 2:
            return cls(FilterType.ABSOLUTE_START, start)
        return cls(FilterType.ABSOLUTE_RANGE, start, fields[0] + fields[2])


def _request_params(priority: int, order: GroupOrder | None, forward: bool,
                    filter: SubscriptionFilter | None, extra: Params,
                    version: IetfVersion = IetfVersion.DRAFT_14) -> Params:
    """SUBSCRIBE / PUBLISH_OK / SUBSCRIBE_UPDATE fields as draft-15+ parameters (as Rust writes
    them: all of them, even at their defaults)."""
    fields: Params = {MessageParam.FORWARD: int(forward), MessageParam.SUBSCRIBER_PRIORITY: _priority(priority)}
    if filter is not None:
        fields[MessageParam.SUBSCRIPTION_FILTER] = filter.to_param(version)
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
        w.request_head(self.request_id).namespace(self.namespace).string(self.track_name)
        if w.version.has_message_params:
            w.params(_request_params(self.subscriber_priority, self.group_order, self.forward, self.filter,
                                     self.params, w.version))
            return
        w.u8(_priority(self.subscriber_priority)).u8(self.group_order).flag(self.forward)
        self.filter.write(w)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, namespace, name, params = r.request_head(), r.namespace(), r.string("track name"), r.params()
            return cls(request_id, namespace, name, mp.take_priority(params), mp.take_group_order(params),
                       mp.take_forward(params), SubscriptionFilter.take(params, r.version), params)
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
        w.reply_id(self.request_id).varint(self.track_alias)
        if w.version.has_message_params:
            fields: Params = {}
            mp.put_largest(fields, self.largest, w.version)
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
            request_id, alias, params = r.reply_id(), r.varint("track alias"), r.params()
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
        if w.version.has_request_streams:  # REQUEST_UPDATE: on the subscription's own stream
            w.request_head(self.request_id)
        else:
            w.varint(self.request_id).varint(self.subscription_request_id)
        if w.version.has_message_params:
            update = SubscriptionFilter(FilterType.ABSOLUTE_RANGE, self.start, self.end_group)
            w.params(_request_params(self.subscriber_priority, None, self.forward, update, self.params, w.version))
            return
        w.location(self.start)
        w.varint(self.end_group).u8(_priority(self.subscriber_priority)).flag(self.forward).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            if r.version.has_request_streams:  # the subscription is the stream's (filled in by its reader)
                request_id, subscription = r.request_head(), 0
            else:
                request_id, subscription = r.varint("request id"), r.varint("subscription request id")
            params = r.params()
            priority, forward = mp.take_priority(params), mp.take_forward(params)
            update = SubscriptionFilter.take(params, r.version)
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
    UNTIL = IetfVersion.DRAFT_16  # from 17 the subscriber stops the request stream instead

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
        w.reply_id(self.request_id).varint(self.status_code).varint(self.stream_count).string(self.reason)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.reply_id(), r.varint("status code"), r.varint("stream count"), r.string("reason"))

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
        w.request_head(self.request_id).namespace(self.namespace).string(self.track_name)
        w.varint(self.track_alias)
        if w.version.has_message_params:
            fields: Params = {MessageParam.FORWARD: int(self.forward)}
            mp.put_largest(fields, self.largest, w.version)
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
            request_id, namespace, name = r.request_head(), r.namespace(), r.string("track name")
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
    UNTIL = IetfVersion.DRAFT_17  # REQUEST_OK answers PUBLISH from 18

    request_id: int
    forward: bool = True
    subscriber_priority: int = 128
    group_order: GroupOrder = GroupOrder.DESCENDING
    filter: SubscriptionFilter = field(default_factory=SubscriptionFilter)
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.reply_id(self.request_id)
        if w.version.has_message_params:
            w.params(_request_params(self.subscriber_priority, self.group_order, self.forward, self.filter,
                                     self.params, w.version))
            return
        w.flag(self.forward).u8(_priority(self.subscriber_priority)).u8(self.group_order)
        self.filter.write(w)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        if r.version.has_message_params:
            request_id, params = r.reply_id(), r.params()
            return cls(request_id, mp.take_forward(params), mp.take_priority(params), mp.take_group_order(params),
                       SubscriptionFilter.take(params, r.version), params)
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
