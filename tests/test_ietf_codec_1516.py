"""The IETF codec's draft-15 and draft-16 deltas (spec §7.1-7.2) against moq-ffi 0.4.18's bytes.

Captures come from shared/spec/moq-transport.md §7.1-7.2 (the 15 CLIENT_SETUP capture elides
its tail there; it is completed from its own length and the 16 capture's values). Round trips
run every message on every draft; malformed input must raise IetfProtocolError.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol.ietf import data as d
from relay.protocol.ietf import messages as m
from relay.protocol.ietf.coding import encode_extensions, parse_extensions, recode_extensions
from relay.protocol.ietf.errors import IetfProtocolError
from relay.protocol.ietf.params import MessageParam
from relay.protocol.ietf.version import IetfVersion

V14, V15, V16 = IetfVersion.DRAFT_14, IetfVersion.DRAFT_15, IetfVersion.DRAFT_16
ALL = [V14, V15, V16]
L = m.Location
NS = ("live", "cam")


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("|", ""))


def s(text: str) -> str:
    """A length-prefixed string as hex."""
    return f"{len(text):02x}" + text.encode().hex()


def frame(kind: int, payload_hex: str) -> bytes:
    return m.frame_message(kind, h(payload_hex))


def decode(framed: bytes, version: IetfVersion) -> m.ControlMessage:
    (kind, payload), = m.ControlFramer().feed(framed)
    return m.decode_message(kind, payload, version)


def test_version_properties() -> None:
    assert V14.has_setup_versions and not V15.has_setup_versions and not V16.has_setup_versions
    assert not V14.has_message_params and V15.has_message_params and V16.has_message_params
    assert not V15.has_delta_keys and V16.has_delta_keys
    assert not V15.has_retry_interval and V16.has_retry_interval
    assert not V15.has_namespace_stream and V16.has_namespace_stream
    assert V14.has_group_order_in_reply and V15.has_group_order_in_reply and not V16.has_group_order_in_reply
    assert not V14.has_priorityless_subgroups and V15.has_priorityless_subgroups


# ------------------------------------------------------------------------------- SETUP
PATH, AUTHORITY, IMPL = "/anon/room?jwt=abc", "127.0.0.1:14443", "moq-lite-rs"
SETUP_15 = h(f"20 0046 06 80040b5a 01 | 02 c0000000ffffffff | 80040b5c 01 | 07 {s(IMPL)} | 01 {s(PATH)}"
             f" | 05 {s(AUTHORITY)}")
SETUP_16 = h(f"20 0043 06 01 {s(PATH)} | 01 c0000000ffffffff | 03 {s(AUTHORITY)} | 02 {s(IMPL)}"
             f" | 80040b53 01 | 02 01")


@pytest.mark.parametrize(("version", "wire"), [(V15, SETUP_15), (V16, SETUP_16)], ids=["d15", "d16"])
def test_client_setup_capture(version: IetfVersion, wire: bytes) -> None:
    setup = decode(wire, version)
    assert isinstance(setup, m.ClientSetup)
    assert setup.versions == [version]  # no list on the wire: the ALPN decided
    p = setup.params
    assert (p.path, p.authority, p.implementation, p.max_request_id) == (PATH, AUTHORITY, IMPL, 0xFFFFFFFF)
    assert p.unknown == {m.SetupParam.SOLICIT: 1, m.SetupParam.NAMESPACE_COUNT: 1}


def test_client_setup_16_is_written_with_ascending_deltas() -> None:
    setup = decode(SETUP_16, V16)
    assert setup.encode(V16) == SETUP_16  # keys 1, 2, 5, 7, 0x40B5A, 0x40B5C as deltas


def test_server_setup_has_no_version_from_15() -> None:
    out = m.ServerSetup(V15, m.SetupParameters(max_request_id=1 << 20)).encode(V15)
    assert out == h("21 0006 01 02 80100000")
    two = m.ServerSetup(V16, m.SetupParameters(max_request_id=1 << 20, implementation="r")).encode(V16)
    assert two == h("21 0009 02 02 80100000 05 01 72")  # 2, then 7 as +5
    assert decode(two, V16).params.implementation == "r"
    assert m.ServerSetup(V14).encode(V14)[3:11] == h("c0000000ff00000e")


# --------------------------------------------------------------------- SUBSCRIBE family
SUB_HEAD = f"02 | 02 {s('live')} {s('cam')} | {s('video')}"
SUBSCRIBE_15 = h(f"03 001c {SUB_HEAD} | 04 10 01 20 40ff 21 01 02 22 02")
SUBSCRIBE_16 = h(f"03 001c {SUB_HEAD} | 04 10 01 10 40ff 01 01 02 01 02")


@pytest.mark.parametrize(("version", "wire"), [(V15, SUBSCRIBE_15), (V16, SUBSCRIBE_16)], ids=["d15", "d16"])
def test_subscribe_capture(version: IetfVersion, wire: bytes) -> None:
    sub = decode(wire, version)
    assert sub == m.Subscribe(2, NS, "video", 255, m.GroupOrder.DESCENDING, True, m.SubscriptionFilter())
    assert sub.encode(version) == wire  # Rust writes all four parameters, in key order


@pytest.mark.parametrize(("version", "wire"), [
    (V15, h("04 0009 01 01 02 09 02 00 01 22 02")),
    (V16, h("04 0007 01 01 01 09 02 00 01")),
], ids=["d15", "d16"])
def test_subscribe_ok_capture(version: IetfVersion, wire: bytes) -> None:
    ok = decode(wire, version)
    assert isinstance(ok, m.SubscribeOk)
    assert (ok.request_id, ok.track_alias, ok.largest, ok.params) == (1, 1, L(0, 1), {})
    assert ok.encode(version) == wire  # 16 drops the group order


def test_subscribe_ok_16_reads_track_extensions() -> None:
    # Rust reads a Track Extensions block from 16 on (writes it from 17): delta types, no count.
    wire = frame(0x04, "01 01 00 | 08 44e8 | 1a 02")  # TIMESCALE 0x08 = 1256, then +0x1a = 0x22 = 2
    ok = decode(wire, V16)
    assert parse_extensions(ok.track_extensions, V16) == [(0x08, 1256), (0x22, 2)]
    assert ok.encode(V16) == wire
    with pytest.raises(IetfProtocolError):
        decode(wire, V15)  # trailing bytes on 15


def test_subscribe_params_defaults_and_checks() -> None:
    bare = frame(0x03, f"{SUB_HEAD} | 00")
    sub = decode(bare, V15)
    assert (sub.subscriber_priority, sub.group_order, sub.forward, sub.filter.type) == (
        128, m.GroupOrder.DESCENDING, True, m.FilterType.LARGEST_OBJECT)
    for bad in ("01 10 02", "01 20 4100", "01 22 05", "01 21 01 09", "01 21 02 02 00"):
        with pytest.raises(IetfProtocolError):
            decode(frame(0x03, f"{SUB_HEAD} | {bad}"), V15)
    # Other parameters stay in `params` (DELIVERY_TIMEOUT), the typed ones do not.
    timed = decode(frame(0x03, f"{SUB_HEAD} | 02 02 4400 10 00"), V15)
    assert timed.params == {MessageParam.DELIVERY_TIMEOUT: 0x400} and timed.forward is False
    with pytest.raises(ValueError, match="both"):
        m.Subscribe(0, NS, "v", params={MessageParam.FORWARD: 1}).encode(V15)


def test_absolute_filter_as_parameter() -> None:
    f = m.SubscriptionFilter(m.FilterType.ABSOLUTE_RANGE, L(5, 1), 9)
    sub = m.Subscribe(4, NS, "v", filter=f)
    for version in (V15, V16):
        back = decode(sub.encode(version), version)
        assert back.filter == f


def test_publish_and_publish_ok() -> None:
    pub = m.Publish(2, NS, "v", 7, m.GroupOrder.ASCENDING, L(3, 0), False, {})
    back15 = decode(pub.encode(V15), V15)
    assert back15 == pub
    back16 = decode(pub.encode(V16), V16)
    assert back16.group_order == m.GroupOrder.DESCENDING  # not on the wire from 16 (Rust's default)
    assert (back16.largest, back16.forward, back16.track_alias) == (L(3, 0), False, 7)
    ok = m.PublishOk(2, True, 9, m.GroupOrder.ASCENDING, m.SubscriptionFilter(m.FilterType.NEXT_GROUP_START))
    for version in ALL:
        assert decode(ok.encode(version), version) == ok


def test_track_status_is_answered_by_request_ok_from_15() -> None:
    assert m.message_class(0x0E, V14) is m.TrackStatusOk
    assert m.message_class(0x0E, V15) is None
    ok = m.RequestOk(6, {MessageParam.LARGEST_OBJECT: h("05 02")})
    assert ok.encode(V15) == h("07 0006 06 01 09 02 05 02")


# --------------------------------------------------------------------- generic replies
def test_error_replies_are_request_error_from_15() -> None:
    for cls in (m.SubscribeError, m.PublishNamespaceError, m.SubscribeNamespaceError, m.FetchError,
                m.PublishError, m.TrackStatusError):
        reply = cls(4, 0x10, "no")
        assert reply.encode(V15) == h("05 0005 04 10 02 6e6f")
        assert reply.encode(V16) == h("05 0006 04 10 00 02 6e6f")  # retry interval 0 = never
        assert reply.encode(V14)[0] == cls.TYPE
    back = decode(frame(0x05, "4063 41f4 5388 0e" + b"Internal error".hex()), V16)
    assert back == m.RequestError(99, 500, "Internal error", 5000)  # Rust's own test values
    assert isinstance(decode(h("05 0005 04 10 02 6e6f"), V15), m.RequestError)
    assert isinstance(decode(h("05 0005 04 10 02 6e6f"), V14), m.SubscribeError)


def test_ok_replies_are_request_ok_from_15() -> None:
    for cls in (m.PublishNamespaceOk, m.SubscribeNamespaceOk):
        assert cls(3).encode(V14) == bytes([cls.TYPE]) + h("0001 03")
        assert cls(3).encode(V15) == cls(3).encode(V16) == h("07 0002 03 00")
    assert decode(h("07 0002 03 00"), V15) == m.RequestOk(3)
    assert decode(h("07 0001 03"), V14) == m.PublishNamespaceOk(3)


def test_draft14_only_types_are_unknown_later() -> None:
    for kind in (0x08, 0x0E, 0x0F, 0x12, 0x13, 0x19, 0x1F):
        with pytest.raises(IetfProtocolError, match="unknown control message type"):
            m.decode_message(kind, h("00 00 00"), V15)
    with pytest.raises(IetfProtocolError, match="unknown"):
        m.decode_message(0x14, h("00"), V16)  # UNSUBSCRIBE_NAMESPACE: close the stream instead
    assert isinstance(m.decode_message(0x14, h("00"), V15), m.UnsubscribeNamespace)
    with pytest.raises(ValueError):
        m.Namespace(("a",)).encode(V15)


# ------------------------------------------------------------------- namespaces (16)
def test_subscribe_namespace_16_capture() -> None:
    wire = h("11 0004 00 00 01 00")  # stream 4: request 0, empty prefix, options 1, no params
    sn = decode(wire, V16)
    assert sn == m.SubscribeNamespace(0, (), {}, options=1)
    assert sn.encode(V16) == wire
    assert sn.encode(V15) == h("11 0003 00 00 00")


def test_namespace_and_done_16() -> None:
    assert m.Namespace(("cam",)).encode(V16) == h("08 0005 01 03 63616d")
    assert m.NamespaceDone(("cam",)).encode(V16) == h("0e 0005 01 03 63616d")
    assert decode(h("08 0005 01 03 63616d"), V16) == m.Namespace(("cam",))
    assert isinstance(decode(h("0e 0005 01 03 63616d"), V16), m.NamespaceDone)


def test_publish_namespace_done_and_cancel_by_request_id_16() -> None:
    done = m.PublishNamespaceDone(NS, 5)
    assert done.encode(V16) == h("09 0001 05")
    assert done.encode(V15) == h(f"09 000a 02 {s('live')} {s('cam')}")
    assert decode(h("09 0001 05"), V16) == m.PublishNamespaceDone((), 5)
    cancel = m.PublishNamespaceCancel(NS, 1, "x", 5)
    assert cancel.encode(V16) == h("0c 0004 05 01 01 78")
    assert decode(cancel.encode(V15), V15) == m.PublishNamespaceCancel(NS, 1, "x")
    with pytest.raises(ValueError):
        m.PublishNamespaceDone(NS).encode(V16)


# ------------------------------------------------------------------------ FETCH
def test_fetch_15_params() -> None:
    f = m.Fetch(2, m.FetchType.RELATIVE_JOINING, joining=m.JoiningRef(0, 1), subscriber_priority=3,
                group_order=m.GroupOrder.ASCENDING)
    assert f.encode(V15) == h("16 0009 02 02 00 01 02 20 03 22 01")
    assert f.encode(V16) == h("16 0009 02 02 00 01 02 20 03 02 01")
    for version in ALL:
        assert decode(f.encode(version), version) == f
    ok = m.FetchOk(2, m.GroupOrder.DESCENDING, False, L(4, 2))
    assert ok.encode(V15) == h("18 0005 02 00 04 02 00")
    assert decode(ok.encode(V16), V16) == ok


# --------------------------------------------------------------------- key-value pairs
def test_extension_blocks_delta_coded_on_16() -> None:
    pairs = [(0x10, 1066), (0x10, 1070), (0x0B, b"ab")]
    block16 = encode_extensions(pairs, V16)
    assert block16 == h("0b 02 6162 | 05 442a | 00 442e")  # sorted: 0x0B, +5 = 0x10, +0 = 0x10
    assert parse_extensions(block16, V16) == sorted(pairs, key=lambda p: p[0])
    block14 = encode_extensions(pairs, V14)
    assert recode_extensions(block14, V14, V16) == block16
    assert recode_extensions(block16, V16, V15) == encode_extensions(sorted(pairs, key=lambda p: p[0]), V15)
    assert recode_extensions(block14, V14, V15) is block14


def test_delta_key_errors() -> None:
    # A duplicate parameter is a delta of 0; an overflowing delta is refused.
    with pytest.raises(IetfProtocolError, match="duplicate"):
        decode(frame(0x07, "03 02 10 01 00 01"), V16)
    assert decode(frame(0x07, "03 02 10 01 00 01"), V15) == m.RequestOk(3, {0x10: 1, 0x00: 1})  # absolute on 15
    with pytest.raises(IetfProtocolError):
        decode(frame(0x07, "03 02 10 01 ffffffffffffffff 01"), V16)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 2**30)), max_size=8))
def test_delta_pairs_round_trip(raw: list[tuple[int, int]]) -> None:
    pairs = [(k & ~1, v) for k, v in raw]  # even keys: varint values
    for version in ALL:
        got = parse_extensions(encode_extensions(pairs, version), version)
        expected = sorted(pairs, key=lambda p: p[0]) if version.has_delta_keys else pairs
        assert got == expected


# ------------------------------------------------------------------------- data plane
def test_priorityless_subgroup_header_15() -> None:
    header = d.SubgroupHeader(1, 5, None, ends_group=True)
    assert header.stream_type == 0x38 and header.encode(V15) == h("38 01 05")
    reader = d.DataStreamReader(version=V15)
    objects = reader.feed(h("38 01 05 | 00 02 6869"))
    assert reader.header == header and objects == [d.SubgroupObject(0, b"hi")]
    for kind in range(0x30, 0x3E):
        assert d.is_subgroup_header(kind, V16) == (kind & 0x06 != 0x06)
        assert not d.is_subgroup_header(kind, V14)
    with pytest.raises(IetfProtocolError):
        d.DataStreamReader(version=V14).feed(h("38 01 05"))
    with pytest.raises(ValueError):
        header.encode(V14)
    assert d.SubgroupHeader(1, 5, 250).encode(V16) == h("10 01 05 fa")


def test_subgroup_extensions_16() -> None:
    header = d.SubgroupHeader(1, 1, 250, has_extensions=True, ends_group=True)
    reader = d.DataStreamReader(version=V16)
    objs = reader.feed(header.encode(V16) + h("00 03 10 442a 03 616263 | 00 03 10 442e 00 00"))
    assert [parse_extensions(o.extensions, V16) for o in objs] == [[(0x10, 1066)], [(0x10, 1070)]]


# ------------------------------------------------------------------------ round trips
MESSAGES: list[m.ControlMessage] = [
    m.Subscribe(0, NS, "v", 7, m.GroupOrder.ASCENDING, True,
                m.SubscriptionFilter(m.FilterType.ABSOLUTE_START, L(1, 2)), {MessageParam.DELIVERY_TIMEOUT: 9}),
    m.SubscribeOk(2, 2, 0, m.GroupOrder.DESCENDING, L(9, 3)),
    m.SubscribeUpdate(4, 0, L(1, 0), 0, 5, True),
    m.Unsubscribe(2),
    m.PublishDone(2, 2, 1, "track ended"),
    m.TrackStatus(6, NS, "v"),
    m.PublishNamespace(8, NS),
    m.SubscribeNamespace(10, ("live",)),
    m.Fetch(12, m.FetchType.STANDALONE, standalone=m.StandaloneRange(NS, "v", L(0, 0), L(3, 0))),
    m.FetchCancel(12),
    m.MaxRequestId(100),
    m.GoAway("moqt://elsewhere"),
]


@pytest.mark.parametrize("version", ALL, ids=["d14", "d15", "d16"])
@pytest.mark.parametrize("message", MESSAGES, ids=[x.NAME for x in MESSAGES])
def test_round_trip_every_draft(message: m.ControlMessage, version: IetfVersion) -> None:
    back = decode(message.encode(version), version)
    assert type(back) is type(message)
    if isinstance(message, m.SubscribeOk) and not version.has_group_order_in_reply:
        assert back.largest == message.largest
        return
    assert back == message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([0x03, 0x04, 0x05, 0x07, 0x08, 0x09, 0x0C, 0x0E, 0x11, 0x16,
                                                 0x18, 0x1D, 0x1E, 0x20, 0x21]), st.sampled_from(ALL))
def test_garbage_raises_only_the_protocol_error(payload: bytes, kind: int, version: IetfVersion) -> None:
    try:
        m.decode_message(kind, payload, version)
    except IetfProtocolError:
        pass
