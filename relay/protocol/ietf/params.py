"""Draft-15/16 message parameters (spec §7.1): the request fields draft-14 wrote in place
(priority, group order, forward, filter, largest location) travel as key-value parameters.

Values follow the even/odd rule: FORWARD, SUBSCRIBER_PRIORITY and GROUP_ORDER are varints (a
u8 or bool as a varint), LARGEST_OBJECT and SUBSCRIPTION_FILTER are odd-keyed byte strings
holding their draft-14 field layout. `take_*` pop a key from a parameter dict read off the wire
(the rest stays, ignorable), checking the value as Rust does; `put_*` add one when writing.
"""

from __future__ import annotations

from enum import IntEnum

from relay.protocol.ietf.coding import GroupOrder, Location, Params, Reader, Writer, parse_extensions
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.version import IetfVersion

_VIOLATION = SessionCode.PROTOCOL_VIOLATION


class MessageParam(IntEnum):
    DELIVERY_TIMEOUT = 0x02
    FILL_PARAMETERS = 0x23  # draft-20 on: asks for the joined group's start (never served here)
    AUTHORIZATION_TOKEN = 0x03
    MAX_CACHE_DURATION = 0x04  # Rust refuses it in SUBSCRIBE on 15/16
    LARGEST_OBJECT = 0x09
    FORWARD = 0x10
    SUBSCRIBER_PRIORITY = 0x20
    SUBSCRIPTION_FILTER = 0x21
    GROUP_ORDER = 0x22


def _int(params: Params, key: MessageParam) -> int | None:
    value = params.pop(key, None)
    if value is None:
        return None
    if not isinstance(value, int):  # the even/odd rule makes this unreachable from the wire
        raise IetfProtocolError(_VIOLATION, f"parameter {key.name} is not an integer")
    return value


def _bytes(params: Params, key: MessageParam) -> bytes | None:
    value = params.pop(key, None)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise IetfProtocolError(_VIOLATION, f"parameter {key.name} is not a byte string")
    return value


def take_forward(params: Params, default: bool = True) -> bool:
    value = _int(params, MessageParam.FORWARD)
    if value is None:
        return default
    if value > 1:
        raise IetfProtocolError(_VIOLATION, f"FORWARD is {value}, not 0 or 1")
    return value == 1


def take_priority(params: Params, default: int = 128) -> int:
    value = _int(params, MessageParam.SUBSCRIBER_PRIORITY)
    if value is None:
        return default
    if value > 0xFF:
        raise IetfProtocolError(_VIOLATION, f"SUBSCRIBER_PRIORITY {value} is not one byte")
    return value


def take_group_order(params: Params, default: GroupOrder = GroupOrder.DESCENDING) -> GroupOrder:
    value = _int(params, MessageParam.GROUP_ORDER)
    if value is None:
        return default
    if value not in GroupOrder._value2member_map_:
        raise IetfProtocolError(_VIOLATION, f"GROUP_ORDER {value:#x} is not a group order")
    return GroupOrder(value)


def take_largest(params: Params) -> Location | None:
    value = params.get(MessageParam.LARGEST_OBJECT)
    if isinstance(value, Location):  # draft-17 on: read bare
        del params[MessageParam.LARGEST_OBJECT]
        return value
    raw = _bytes(params, MessageParam.LARGEST_OBJECT)
    if raw is None:
        return None
    r = Reader(raw)
    where = r.location("largest object")
    r.done("LARGEST_OBJECT")
    return where


def take_inner(params: Params, key: MessageParam, version: IetfVersion = IetfVersion.DRAFT_14) -> Reader | None:
    """A byte-string parameter to parse further (SUBSCRIPTION_FILTER), or None when absent."""
    raw = _bytes(params, key)
    return None if raw is None else Reader(raw, version=version)


def put_int(params: Params, key: MessageParam, value: int) -> None:
    params[key] = int(value)


def put_largest(params: Params, where: Location | None, version: IetfVersion = IetfVersion.DRAFT_14) -> None:
    """LARGEST_OBJECT: a location inside the bytes up to draft-16, a bare location from 17."""
    if where is None:
        return
    if version.has_request_streams:
        params[MessageParam.LARGEST_OBJECT] = where  # type: ignore[assignment]
    else:
        params[MessageParam.LARGEST_OBJECT] = bytes(Writer().location(where).buf)


def merged(fields: Params, extra: Params) -> Params:
    """The typed fields' parameters and the caller's own, which must not name the same key."""
    clash = set(fields) & set(extra)
    if clash:
        raise ValueError(f"parameters {sorted(clash)} given both as fields and in params")
    return {**fields, **extra}


def read_track_extensions(r: Reader) -> bytes:
    """Draft-16's trailing Track Extensions block of SUBSCRIBE_OK / PUBLISH / FETCH_OK: pairs
    without a count to the end of the message, delta-coded; returned raw after checking."""
    block = r.take(r.remaining, "track extensions")
    try:
        parse_extensions(block, r.version)
    except IetfProtocolError as exc:
        raise IetfProtocolError(_VIOLATION, f"malformed track extensions: {exc}") from exc
    return block
