"""The IETF codec's drafts 17-22 (shared/spec/moq-transport-17-22.md) against moq-ffi 0.4.18's
captured bytes: the leading-ones varint, SETUP and its options, requests with and without the
Required Request ID Delta, replies without Request IDs, the per-parameter value shapes and the
three LOCATION_FILTER forms, Track Properties, GOAWAY, subgroup streams with FIRST_OBJECT.
Malformed input must raise IetfProtocolError, never anything else.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol.ietf import data as d
from relay.protocol.ietf import messages as m
from relay.protocol.ietf import varint as lo
from relay.protocol.ietf.coding import Reader, Writer
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.version import IetfVersion

V16, V17, V18, V19, V20, V21, V22 = (IetfVersion(0xFF000000 + n) for n in range(16, 23))
NEW = [V17, V18, V19, V20, V21, V22]
ids = [f"d{v.draft}" for v in NEW]
L = m.Location


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def s(text: str) -> str:
    return f"{len(text):02x}" + text.encode().hex()


def one(framed: bytes, version: IetfVersion) -> m.ControlMessage:
    reader = m.ControlStreamReader(version=version)
    (message,) = reader.feed(framed)
    reader.finish()
    return message


# ------------------------------------------------------------------------------- varint
@pytest.mark.parametrize(("value", "wire"), [
    (0, "00"), (127, "7f"), (128, "8080"), (0x2F00, "af00"), (16383, "bfff"), (16384, "c04000"),
    (1_000_000, "cf4240"), ((1 << 42) - 1, "fbffffffffff"), (1 << 42, "fe00040000000000"),
    ((1 << 64) - 1, "ff" + "ff" * 8),
])
def test_leading_ones_varint(value: int, wire: str) -> None:
    assert lo.encode(value).hex() == wire
    assert lo.decode(h(wire)) == (value, len(wire) // 2)
    assert lo.decode(h(wire)[:-1]) is None


def test_seven_byte_form_only_from_draft_18() -> None:
    seven = h("fc 00 00 00 00 00 01")  # 1111110x: 6 more bytes, here a non-minimal 1
    assert lo.decode(seven) == (1, 7)
    assert lo.decode(seven, seven_byte=False) is lo.BAD_FORM
    assert Reader(seven, version=V18).varint("x") == 1
    with pytest.raises(IetfProtocolError, match="7-byte"):
        Reader(seven, version=V17).varint("x")
    # Non-minimal forms are read (Rust does); QUIC varints are not this form.
    assert Reader(h("80 05"), version=V17).varint("x") == 5
    assert Reader(h("40 80"), version=V16).varint("x") == 128


@given(st.integers(0, (1 << 64) - 1))
@settings(max_examples=300, deadline=None)
def test_varint_round_trip(value: int) -> None:
    wire = lo.encode(value)
    assert lo.decode(wire) == (value, len(wire)) and lo.length(value) == len(wire)
    assert len(wire) != 7  # never written


# ------------------------------------------------------------------------------- SETUP
HOP = "c40b4d fe01020304050607"  # key 7 + 0x40B4D = 0x40B54 (even), its value in the 8-byte form
SETUP_CLIENT = h(f"af00 0034 | 01 {s('/anon')} | 04 {s('127.0.0.1:14611')} | 02 {s('moq-lite-rs')}"
                 f" | {HOP} | 06 01 | 02 01")


@pytest.mark.parametrize("version", [V17, V18, V22], ids=["d17", "d18", "d22"])
def test_client_setup_as_captured(version: IetfVersion) -> None:
    setup = one(SETUP_CLIENT, version)
    assert isinstance(setup, m.Setup)
    p = setup.params
    assert (p.path, p.authority, p.implementation) == ("/anon", "127.0.0.1:14611", "moq-lite-rs")
    assert set(p.unknown) == {0x40B54, 0x40B5A, 0x40B5C} and p.unknown[0x40B5A] == 1


def test_setup_option_in_the_seven_byte_form() -> None:
    # Rust never writes the 7-byte form; another peer may, from draft-18 only.
    wire = h(f"af00 000c | 01 {s('/a')} | 03 fc000000000001")
    assert one(wire, V18).params.max_auth_token_cache_size == 1
    with pytest.raises(IetfProtocolError, match="7-byte"):
        one(wire, V17)


def test_relay_setup_bytes() -> None:
    # What 0.4.18 accepted from a relay: IMPLEMENTATION only, no version, no other options.
    ours = m.Setup(m.SetupParameters(implementation="pyrelay"))
    assert ours.encode(V17) == ours.encode(V22) == h(f"af00 0009 07 {s('pyrelay')}")
    assert one(ours.encode(V20), V20) == ours
    for old in (m.ClientSetup([V16]), m.ServerSetup(V16)):
        with pytest.raises(ValueError):
            old.encode(V17)
    with pytest.raises(IetfProtocolError, match="unknown control message type 0x20"):
        one(m.ClientSetup([V16]).encode(V16), V17)


def test_setup_option_repeated_is_refused() -> None:
    with pytest.raises(IetfProtocolError):
        one(h(f"af00 000a | 07 {s('abc')} | 00 {s('def')}"), V18)  # 0x07 twice (delta 0)


# ------------------------------------------------------------------------------- requests
def test_subscribe_namespace_17_and_18() -> None:
    seventeen = one(h("11 0005 00 00 00 01 00"), V17)  # request 0, delta 0, empty prefix, options 1
    assert isinstance(seventeen, m.SubscribeNamespace) and (seventeen.request_id, seventeen.prefix) == (0, ())
    eighteen = one(h("50 0003 00 00 00"), V18)
    assert isinstance(eighteen, m.SubscribeNamespace) and eighteen.prefix == ()
    for kind, version in ((0x50, V17), (0x11, V18), (0x50, V16)):
        with pytest.raises(IetfProtocolError, match="unknown control message type"):
            one(m.frame_message(kind, h("00 00 00"), version), version)
    assert m.SubscribeNamespace(2, ("a",)).encode(V18) == h(f"50 0005 02 01 {s('a')} 00")


def test_publish_namespace_17_and_18() -> None:
    assert one(h(f"06 000c 02 00 01 {s('pubcast')} 00"), V17) == m.PublishNamespace(2, ("pubcast",))
    assert one(h(f"06 000b 02 01 {s('pubcast')} 00"), V18) == m.PublishNamespace(2, ("pubcast",))
    assert m.PublishNamespace(2, ("pubcast",)).encode(V17) == h(f"06 000c 02 00 01 {s('pubcast')} 00")


def test_required_request_id_delta() -> None:
    # Request 2 requiring request 0 (delta 1) is fine; delta 2 reaches below 0.
    assert one(h(f"06 000c 02 01 01 {s('pubcast')} 00"), V17).request_id == 2
    with pytest.raises(IetfProtocolError) as exc:
        one(h(f"06 000c 02 02 01 {s('pubcast')} 00"), V17)
    assert exc.value.code == SessionCode.INVALID_REQUIRED_REQUEST_ID


SUBSCRIBE_18 = h(f"03 0017 04 01 {s('demo')} {s('video')} 04 10 01 10 ff 01 01 02 01 02")
SUBSCRIBE_20 = h(f"03 001e 04 01 {s('demo')} {s('video')} 05 | 10 01 | 10 ff | 01 02 00 00 | 01 02 | 01 04 01 21 01 01")
SUBSCRIBE_22 = h(f"03 001c 04 01 {s('demo')} {s('video')} 05 | 10 01 | 10 ff | 01 05 | 01 02 | 01 04 01 21 01 01")


@pytest.mark.parametrize(("version", "wire"), [(V18, SUBSCRIBE_18), (V19, SUBSCRIBE_18), (V20, SUBSCRIBE_20),
                                               (V21, SUBSCRIBE_20), (V22, SUBSCRIBE_22)],
                         ids=["d18", "d19", "d20", "d21", "d22"])
def test_subscribe_as_captured(version: IetfVersion, wire: bytes) -> None:
    sub = one(wire, version)
    assert isinstance(sub, m.Subscribe)
    assert (sub.request_id, sub.namespace, sub.track_name) == (4, ("demo",), "video")
    assert (sub.forward, sub.subscriber_priority, sub.group_order) == (True, 255, m.GroupOrder.DESCENDING)
    assert sub.filter.type == m.FilterType.LARGEST_OBJECT  # LargestObject / Next Object
    if version.has_varint_filter:
        assert set(sub.params) == {0x23}  # FILL_PARAMETERS, kept and not served


def test_relay_subscribe_on_17_and_22() -> None:
    # What the relay sends upstream; 0.4.18 answered both captures of this shape.
    bare_17 = h(f"03 000e 01 00 01 {s('pubcast')} {s('t')} 00")
    bare_22 = h(f"03 000d 01 01 {s('pubcast')} {s('t')} 00")
    assert one(bare_17, V17) == m.Subscribe(1, ("pubcast",), "t")
    assert one(bare_22, V22) == m.Subscribe(1, ("pubcast",), "t")
    ours = m.Subscribe(1, ("pubcast",), "t", filter=m.SubscriptionFilter(m.FilterType.NEXT_GROUP_START))
    for version in NEW:
        assert one(ours.encode(version), version) == ours


@pytest.mark.parametrize("version", NEW, ids=ids)
def test_location_filters_round_trip(version: IetfVersion) -> None:
    F = m.SubscriptionFilter
    for f in (F(m.FilterType.NEXT_GROUP_START), F(m.FilterType.LARGEST_OBJECT),
              F(m.FilterType.ABSOLUTE_START, L(7, 3)), F(m.FilterType.ABSOLUTE_RANGE, L(7, 0), 9)):
        sub = m.Subscribe(6, ("a", "b"), "t", filter=f)
        assert one(sub.encode(version), version).filter == f


def test_location_filter_wire_forms() -> None:
    F = m.SubscriptionFilter(m.FilterType.ABSOLUTE_RANGE, L(7, 1), 9)
    assert F.to_param(V16) == h("04 07 01 09")  # end group as is
    assert F.to_param(V17) == h("04 07 01 02")  # end group a delta from the start
    assert F.to_param(V20) == h("07 01 02")  # [g, o, Δ]
    assert F.to_param(V22) == h("03 07 01 02")  # type 3, no length
    # Draft-22: a type with too few fields, and an unknown type, are violations.
    for bad in ("21 03 07 01", "21 06"):
        sub = h(f"03 00 0b 04 01 {s('a')} {s('t')} 01 {bad}")
        wire = m.frame_message(3, sub[3:][:len(sub) - 3], V22)
        with pytest.raises(IetfProtocolError):
            one(wire, V22)


def test_unknown_or_misshaped_parameters_are_violations() -> None:
    base = f"04 01 {s('demo')} {s('video')}"
    with pytest.raises(IetfProtocolError, match="unknown parameter 0x40"):
        one(m.frame_message(3, h(base + " 01 40 00"), V18), V18)
    with pytest.raises(IetfProtocolError, match="unknown parameter 0x23"):  # FILL_PARAMETERS before 20
        one(m.frame_message(3, h(base + " 01 23 00"), V19), V19)
    with pytest.raises(IetfProtocolError, match="FORWARD is 2"):
        one(m.frame_message(3, h(base + " 01 10 02"), V18), V18)
    with pytest.raises(ValueError):
        m.Subscribe(1, ("a",), "t", params={0x40: 1}).encode(V18)


# ------------------------------------------------------------------------------- replies
def test_replies_carry_no_request_id() -> None:
    assert m.RequestOk(9).encode(V17) == h("07 0001 00")
    assert one(h("07 0001 00"), V18) == m.RequestOk(0)
    ns = m.Namespace(("demo",))
    assert ns.encode(V18) == h(f"08 0006 01 {s('demo')}")
    err = m.RequestError(6, 0x3, "no fetch")
    assert err.encode(V17) == h(f"05 000b 03 00 {s('no fetch')}")
    assert one(err.encode(V18), V18) == m.RequestError(0, 0x3, "no fetch")
    # The relay names "does not exist" by the draft-14 registry; the wire is draft-17's 0x10.
    missing = m.SubscribeError(4, 0x4, "x")
    assert missing.encode(V17)[3] == 0x10 and one(missing.encode(V17), V17).error_code == 0x4
    assert m.SubscribeOk(4, track_alias=4).encode(V20) == h("04 0002 04 00")
    done = m.PublishDone(4, 0x2, 3, "track ended")
    assert one(done.encode(V19), V19) == m.PublishDone(0, 0x2, 3, "track ended")


SUBSCRIBE_OK_PUBLISHER = h("04 000e 01 | 01 09 00 01 | 08 cf4240 06 8080 14 02")


@pytest.mark.parametrize("version", NEW, ids=ids)
def test_subscribe_ok_from_a_rust_publisher(version: IetfVersion) -> None:
    # alias 1, LARGEST_OBJECT {0,1} bare, then TIMESCALE 1e6, PRIORITY 128, GROUP_ORDER 2 (delta-coded).
    ok = one(SUBSCRIBE_OK_PUBLISHER, version)
    assert isinstance(ok, m.SubscribeOk)
    assert (ok.track_alias, ok.largest, ok.params) == (1, L(0, 1), {})
    assert ok.track_extensions == h("08 cf4240 06 8080 14 02")


def test_request_ok_with_properties_on_18() -> None:
    assert one(h("07 0003 00 08 01"), V18) == m.RequestOk(0)
    with pytest.raises(IetfProtocolError):
        one(h("07 0003 00 08 01"), V17)


def test_goaway() -> None:
    assert m.GoAway("", 1000).encode(V17) == h("10 0003 00 83e8")
    assert one(h("10 0003 00 83e8"), V19) == m.GoAway("", 1000)
    assert one(h("10 0004 00 83e8 05"), V18) == m.GoAway("", 1000)  # 18's trailing Request ID
    with pytest.raises(IetfProtocolError, match="trailing"):
        one(h("10 0004 00 83e8 05"), V19)


def test_removed_messages() -> None:
    for message in (m.MaxRequestId(10), m.Unsubscribe(4), m.PublishNamespaceDone((), 2), m.FetchCancel(6),
                    m.PublishOk(1)):
        if isinstance(message, m.PublishOk):
            assert message.encode(V17)  # PUBLISH_OK lives on in 17
            with pytest.raises(ValueError):
                message.encode(V18)
            continue
        with pytest.raises(ValueError):
            message.encode(V17)


# ------------------------------------------------------------------------------- data plane
def test_subgroup_streams_as_captured() -> None:
    # 0.4.18 publishing on 17: 0x19 (properties + end of group), alias 1, group 0, priority 128,
    # objects with a Timestamp property.
    g17 = h(f"19 01 00 80 | 00 02 10 00 {s('f0')} | 00 02 10 00 {s('g0')}")
    r = d.DataStreamReader(version=V17)
    objects = r.feed(g17)
    r.finish()
    assert r.header == d.SubgroupHeader(1, 0, 128, 0, d.SubgroupIdMode.ZERO, True, True)
    assert [o.payload for o in objects] == [b"f0", b"g0"]
    # 0x59 on 18: the same with FIRST_OBJECT; on 17 that bit is not a type.
    r = d.DataStreamReader(version=V18)
    assert [o.payload for o in r.feed(b"\x59" + g17[1:])] == [b"f0", b"g0"]
    assert r.header.first_object
    with pytest.raises(IetfProtocolError, match="unknown data stream type 0x59"):
        d.DataStreamReader(version=V17).feed(b"\x59" + g17[1:])


@pytest.mark.parametrize("version", NEW, ids=ids)
def test_relay_group_streams(version: IetfVersion) -> None:
    header = d.SubgroupHeader(1, 200, 128)
    wire = header.encode(version) + d.contiguous_object_prefix(5, version) + b"hello" + \
        d.contiguous_object_prefix(300, version) + b"x" * 300 + d.contiguous_object_prefix(0, version)
    assert wire[0] == (0x50 if version.has_first_object_bit else 0x10)
    assert wire[2:4] == lo.encode(200)
    r = d.DataStreamReader(version=version)
    objects = r.feed(wire)
    r.finish()
    assert [(o.object_id, len(o.payload)) for o in objects] == [(0, 5), (1, 300), (2, 0)]


# ------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("version", NEW, ids=ids)
@given(data=st.binary(max_size=96))
@settings(max_examples=150, deadline=None)
def test_any_control_bytes_fail_cleanly(version: IetfVersion, data: bytes) -> None:
    for kind in (0x2F00, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0B, 0x10, 0x11, 0x16, 0x1D, 0x50):
        try:
            m.ControlStreamReader(version=version).feed(m.frame_message(kind, data, version))
        except IetfProtocolError:
            pass


@pytest.mark.parametrize("version", NEW, ids=ids)
@given(data=st.binary(max_size=96))
@settings(max_examples=150, deadline=None)
def test_any_data_stream_bytes_fail_cleanly(version: IetfVersion, data: bytes) -> None:
    r = d.DataStreamReader(version=version)
    try:
        r.feed(data)
        r.finish()
    except IetfProtocolError:
        pass


def test_oversized_lengths_are_refused_before_buffering() -> None:
    with pytest.raises(IetfProtocolError, match="limit"):
        m.ControlStreamReader(max_message_size=1024, version=V18).feed(h("03 ffff"))
    with pytest.raises(IetfProtocolError, match="limit"):
        d.DataStreamReader(max_object_size=1000, version=V18).feed(h("10 01 00 80 00") + lo.encode(1 << 40))
    with pytest.raises(IetfProtocolError):
        Reader(Writer(V18).varint(70000).buf, version=V18).blob("x")
