"""Property-based fuzzing of every decoder of peer input (hypothesis, bounded for the suite).

Two invariants. A decoder given any bytes returns a value or raises its layer's one error type
(tests/fuzz_targets.py names them), never IndexError, ValueError, UnicodeDecodeError, ...; and
a valid value, encoded, decodes to itself. The long campaign is benchmarks/fuzz_campaign.py.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from fuzz_targets import KEY, TARGETS, VERIFIER, MemoryRecv, Target, run_now, signed, unframe
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from relay.auth.pattern import Pattern, distinct
from relay.auth.scope import AuthError
from relay.auth.tokens import MAX_TIME_CLAIM, claims_from_payload, sign_token
from relay.digits import ascii_uint
from relay.model.path import has_prefix, join, norm, strip
from relay.protocol.lite import legacy
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ProtocolError
from relay.protocol.lite.streams import MessageReader
from relay.protocol.lite.version import SUPPORTED, Version
from relay.transport import polyfill, qmux
from relay.transport.quic.webtransport import (
    CapsuleReader,
    encode_close_capsule,
    parse_sf_string_list,
    sf_string,
)
from relay.web.app import BadRequest, parse_group

# Modest and deterministic: the whole file stays well under a minute on a slow shared machine.
# FUZZ_SCALE=20 (say) runs twenty times the examples, with fresh random ones each run.
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=150 * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
QUICK = settings(FUZZ, max_examples=60 * SCALE)
VERSIONS = sorted(SUPPORTED)
ids = [t.name for t in TARGETS]


# ----------------------------------------------------------------------------- any bytes
def check(target: Target, data: bytes) -> None:
    try:
        target.run(data)
    except target.allowed:
        pass


@pytest.mark.parametrize("target", TARGETS, ids=ids)
@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_give_a_value_or_the_layers_error(target: Target, data: bytes) -> None:
    check(target, data)


@pytest.mark.parametrize("target", TARGETS, ids=ids)
@FUZZ
@given(pick=st.data())
def test_mutated_valid_inputs_give_a_value_or_the_layers_error(target: Target, pick: st.DataObject) -> None:
    data = bytearray(pick.draw(st.sampled_from(target.seeds)))
    for _ in range(pick.draw(st.integers(1, 4))):
        at = pick.draw(st.integers(0, len(data)))
        cut = pick.draw(st.integers(0, 8))
        data[at : at + cut] = pick.draw(st.binary(max_size=8))
    check(target, bytes(data))


# ----------------------------------------------------------------------------- moq-lite round trips
varint = st.integers(0, 2**62 - 1)
u8 = st.integers(0, 255)
text = st.text(max_size=24)
path = st.text(max_size=24)  # at most 24 characters: fewer than the 32 parts a path may have
hops = st.lists(varint, max_size=m.MAX_HOPS)
timescale = st.integers(1, 2**62 - 1)


def prefs(v: Version) -> st.SearchStrategy[dict[str, Any]]:
    """Subscription preferences as version `v` carries them (None/0 where it carries nothing)."""
    if v <= Version.LITE_02:
        return st.just({})
    if v <= Version.LITE_05:  # start as Opt+1, end as the exclusive end (0 = none)
        return st.fixed_dictionaries({"ordered": st.booleans(), "max_latency_ms": varint,
                                      "start_group": st.none() | st.integers(0, 2**62 - 2),
                                      "end_group": st.none() | st.integers(1, 2**62 - 1)})
    return st.fixed_dictionaries({"max_latency_ms": varint, "start_group": st.none() | st.integers(1, 2**62 - 1),
                                  "end_group": st.none() | st.integers(1, 2**62 - 1),
                                  "start_frame": varint, "end_frame": varint})


def lite_messages(v: Version) -> st.SearchStrategy[tuple[Any, Any]]:
    """(message, decode(encoded) -> message) for every message of version `v`."""

    def plain(decode):
        return lambda wire: decode(unframe(wire)[1], v)

    def typed(decode):
        return lambda wire: decode(*unframe(wire, typed=True), v)

    cases: list[st.SearchStrategy[tuple[Any, Any]]] = [
        st.builds(m.AnnounceRequest, path, varint if v.has_exclude_hop else st.just(0)).map(
            lambda x: (x, plain(m.AnnounceRequest.decode))),
        st.builds(lambda i, b, t, p, kw: m.Subscribe(i, b, t, p, **kw), varint, path, text, u8, prefs(v)).map(
            lambda x: (x, plain(m.Subscribe.decode))),
        st.builds(m.GroupHeader, varint, varint, varint if v >= Version.LITE_06 else st.just(0)).map(
            lambda x: (x, plain(m.GroupHeader.decode))),
        st.builds(m.Fetch, path, text, u8, varint, *([varint, varint] if v >= Version.LITE_06 else [])).map(
            lambda x: (x, plain(m.Fetch.decode))),
        st.builds(m.Probe, varint, varint if v >= Version.LITE_04 else st.just(0)).map(
            lambda x: (x, plain(m.Probe.decode))),
        st.builds(m.Goaway, text).map(lambda x: (x, plain(m.Goaway.decode))),
    ]
    if v.has_announce_init:
        cases.append(st.builds(m.AnnounceInit, st.lists(path, max_size=8)).map(
            lambda x: (x, plain(m.AnnounceInit.decode))))
    if v.has_announce_ok:
        cases.append(st.builds(m.AnnounceOk, varint, varint).map(lambda x: (x, plain(m.AnnounceOk.decode))))
    if v.has_typed_announce:
        cases.append(st.one_of(st.builds(m.AnnounceStart, path, hops, varint, varint), st.builds(m.AnnounceEnd, varint),
                               st.builds(m.AnnounceUpdate, varint, hops, varint, varint)).map(
            lambda x: (x, typed(m.decode_announce_06))))
    elif v == Version.LITE_03:
        cases.append(st.builds(m.Announce, st.booleans(), path, st.just([]), st.integers(0, m.MAX_HOPS)).map(
            lambda x: (x, plain(m.Announce.decode))))
    else:
        cases.append(st.builds(lambda a, s, h: m.Announce(a, s, h, len(h)), st.booleans(), path,
                               hops if v >= Version.LITE_04 else st.just([])).map(
            lambda x: (x, plain(m.Announce.decode))))
    if v.has_typed_subscribe_response:
        cases.append(st.builds(lambda p, kw: m.SubscribeUpdate(p, **kw), u8, prefs(v)).map(
            lambda x: (x, plain(m.SubscribeUpdate.decode))))
        if v <= Version.LITE_04:
            replies = st.one_of(st.builds(lambda p, kw: m.SubscribeOk(p, **kw), u8, prefs(v)),
                                st.builds(m.SubscribeDrop, varint, varint, varint))
        else:
            replies = st.one_of(st.builds(m.SubscribeStart, varint), st.builds(m.SubscribeEnd, varint),
                                st.builds(m.SubscribeDrop, varint, varint, varint))
        cases.append(replies.map(lambda x: (x, typed(m.decode_subscribe_response))))
    else:
        ok = st.builds(m.SubscribeOk, u8) if v == Version.LITE_01 else st.just(m.SubscribeOk())
        cases.append(ok.map(lambda x: (x, plain(m.SubscribeOk.decode))))
    if v.has_track_stream:
        cases.append(st.builds(m.TrackRequest, path, text).map(lambda x: (x, plain(m.TrackRequest.decode))))
        cases.append(st.builds(m.TrackInfoMsg, u8, st.booleans() if v == Version.LITE_05 else st.just(False),
                               varint, timescale).map(lambda x: (x, plain(m.TrackInfoMsg.decode))))
    if v.has_setup_stream:
        cases.append(st.builds(m.Setup, st.dictionaries(varint, st.binary(max_size=16), max_size=m.MAX_PARAMETERS)).map(
            lambda x: (x, plain(m.Setup.decode))))
    if v.has_datagrams:
        cases.append(st.builds(m.Datagram, varint, varint, varint, st.binary(max_size=64)).map(
            lambda x: (x, m.Datagram.decode)))
    return st.one_of(cases)


@pytest.mark.parametrize("v", VERSIONS, ids=[v.name_str for v in VERSIONS])
@settings(FUZZ, max_examples=300 * SCALE)
@given(pick=st.data())
def test_lite_messages_round_trip(v: Version, pick: st.DataObject) -> None:
    message, decode = pick.draw(lite_messages(v))
    wire = message.encode() if isinstance(message, m.Datagram) else message.encode(v)
    assert decode(wire) == message


@pytest.mark.parametrize("v", VERSIONS, ids=[v.name_str for v in VERSIONS])
@QUICK
@given(header=st.tuples(varint, varint), frames=st.lists(st.tuples(st.integers(-(2**61), 2**61 - 1),
                                                                   st.binary(max_size=40)), max_size=6),
       chunk=st.integers(0, 7))
def test_group_streams_read_back_in_any_split(v: Version, header: tuple[int, int],
                                              frames: list[tuple[int, bytes]], chunk: int) -> None:
    """A group stream as the relay sends it, read by the stream reader however the bytes arrive."""
    wire = m.encode_uni_type(m.UniStream.GROUP) + m.GroupHeader(*header).encode(v)
    wire += b"".join(m.encode_frame(v, payload, delta) for delta, payload in frames)
    reader = MessageReader(MemoryRecv(wire, chunk), 1 << 16)
    assert run_now(reader.varint()) == m.UniStream.GROUP
    assert run_now(reader.message(m.GroupHeader.decode, v, 4096)) == m.GroupHeader(*header)
    got = []
    while (frame := run_now(reader.frame(v, 1 << 16))) is not None:
        got.append(frame)
    assert got == [(delta if v.has_timestamps else 0, payload) for delta, payload in frames]


# ----------------------------------------------------------------------------- legacy SETUP
def legacy_params(encoding: legacy.LegacyParams) -> st.SearchStrategy[dict[int, int | bytes]]:
    keys = varint.filter(lambda k: k != legacy.LEGACY_PARAM_PATH)  # the Path (UTF-8) is drawn apart
    if encoding is legacy.LegacyParams.TLV:
        return st.dictionaries(keys, st.binary(max_size=12), max_size=8)
    return st.dictionaries(keys, st.binary(max_size=12), max_size=8).flatmap(
        lambda d: st.fixed_dictionaries({k: varint if k % 2 == 0 else st.just(v) for k, v in d.items()}))


@FUZZ
@given(pick=st.data())
def test_legacy_setups_round_trip(pick: st.DataObject) -> None:
    encoding = pick.draw(st.sampled_from(list(legacy.LegacyParams)))
    params = pick.draw(legacy_params(encoding))
    if pick.draw(st.booleans()):
        params[legacy.LEGACY_PARAM_PATH] = pick.draw(text).encode()
    versions = pick.draw(st.lists(varint, max_size=legacy.MAX_LEGACY_VERSIONS))
    sent = legacy.LegacyClientSetup(versions, params, encoding)
    wire = sent.encode()
    assert wire[0] == legacy.LEGACY_CLIENT_SETUP and int.from_bytes(wire[1:3], "big") == len(wire) - 3
    try:
        got = legacy.LegacyClientSetup.decode(wire[3:])
    except ProtocolError as exc:
        # Some parameter sets read as valid parameters in both encodings with different paths
        # ({0: 80 00, 20401094656: 00, path ""} does); the relay refuses those bytes by design.
        assume("ambiguous" not in str(exc))
        raise
    assert got.versions == versions and got.path == sent.path
    # Bytes that fit both parameter encodings are read as draft-14 (lite §3.5): either way the
    # reading is exact, so it writes the same bytes back.
    assert got.encode() == wire
    if got.params_encoding is encoding:
        assert got.params == params
    server = legacy.LegacyServerSetup(pick.draw(varint))
    assert legacy.LegacyServerSetup.decode(server.encode()[3:]) == server


# ----------------------------------------------------------------------------- QMux, polyfill
TRANSPORT_PARAMS = [qmux.P_IDLE, qmux.P_MAX_DATA, qmux.P_STREAM_BIDI_LOCAL, qmux.P_STREAM_BIDI_REMOTE,
                    qmux.P_STREAM_UNI, qmux.P_STREAMS_BIDI, qmux.P_STREAMS_UNI, qmux.P_MAX_DATAGRAM, qmux.P_MAX_RECORD]


@FUZZ
@given(known=st.dictionaries(st.sampled_from(TRANSPORT_PARAMS), varint),
       other=st.dictionaries(varint.filter(lambda k: k not in qmux.FORBIDDEN_PARAMS and k not in TRANSPORT_PARAMS),
                             varint, max_size=4))
def test_qmux_transport_parameters_round_trip(known: dict[int, int], other: dict[int, int]) -> None:
    frame = qmux.encode_params({**known, **other})
    r = m.Reader(frame)
    assert r.varint() == qmux.QX_TRANSPORT_PARAMETERS
    decoded = qmux.decode_params(r.bytes_())
    # Known parameters are read as numbers; unknown ones are kept as their raw bytes.
    assert decoded == {**known, **{k: qmux.enc(v) for k, v in other.items()}}


streams = st.lists(st.tuples(st.booleans(), st.lists(st.binary(min_size=1, max_size=3000), max_size=4)),
                   min_size=1, max_size=4)


def deliver(events: list[Any]) -> dict[int, tuple[bytes, bool]]:
    got: dict[int, tuple[bytes, bool]] = {}
    for ev in events:
        assert isinstance(ev, qmux.StreamData), ev
        data, fin = got.get(ev.stream_id, (b"", False))
        assert not fin
        got[ev.stream_id] = (data + ev.data, ev.fin)
    return got


@QUICK
@given(sent=streams)
def test_qmux_stream_data_round_trips(sent: list[tuple[bool, list[bytes]]]) -> None:
    server, client = qmux.QmuxConnection(is_server=True), qmux.QmuxConnection(is_server=False)
    for message in client.messages_to_send():
        server.receive_message(message)
    for message in server.messages_to_send():
        client.receive_message(message)
    want = {}
    for uni, chunks in sent:
        sid = server.open_stream(uni)
        for chunk in chunks:
            server.send_stream_data(sid, chunk)
        server.send_stream_data(sid, b"", fin=True)
        want[sid] = (b"".join(chunks), True)
    events = []
    for message in server.messages_to_send():
        client.receive_message(message)
        events += client.events()
    assert deliver(events) == want


@QUICK
@given(sent=streams)
def test_polyfill_stream_data_round_trips(sent: list[tuple[bool, list[bytes]]]) -> None:
    server, client = polyfill.PolyfillConnection(is_server=True), polyfill.PolyfillConnection(is_server=False)
    want = {}
    for uni, chunks in sent:
        sid = server.open_stream(uni)
        for chunk in chunks:
            server.send_stream_data(sid, chunk)
        server.send_stream_data(sid, b"", fin=True)
        want[sid] = (b"".join(chunks), True)
    events = []
    for message in server.messages_to_send():
        client.receive_message(message)
        events += client.events()
    assert deliver(events) == want


# ----------------------------------------------------------------------------- WebTransport
@FUZZ
@given(names=st.lists(st.text(max_size=12), max_size=6))
def test_sf_string_lists_round_trip(names: list[str]) -> None:
    header = ", ".join(sf_string(n).decode() for n in names)
    assert parse_sf_string_list(header) == names


@FUZZ
@given(code=st.integers(0, 2**32 - 1), reason=st.text(st.characters(max_codepoint=127), max_size=200),
       cuts=st.lists(st.integers(0, 300), max_size=4), before=st.binary(max_size=8))
def test_close_capsule_round_trips_in_any_split(code: int, reason: str, cuts: list[int], before: bytes) -> None:
    # Any number of unknown capsules may come first (here one, of type 0x29 and arbitrary content).
    wire = qmux.enc(0x29) + qmux.enc(len(before)) + before + encode_close_capsule(code, reason)
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    reader = CapsuleReader()
    closes = [reader.feed(wire[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    assert [c for c in closes if c is not None] == [(code, reason)] and closes[-1] == (code, reason)


# ----------------------------------------------------------------------------- HTTP, paths
@FUZZ
@given(raw=st.text(max_size=30), limit=st.integers(1, 2**64))
def test_ascii_uint_reads_ascii_digits_only(raw: str, limit: int) -> None:
    ascii_digits = re.fullmatch(r"[0-9]+", raw) is not None  # [0-9]: ASCII, unlike \d
    want = int(raw) if ascii_digits and len(raw) <= len(str(limit)) and int(raw) < limit else None
    assert ascii_uint(raw, limit) == want


@FUZZ
@given(n=st.integers(0, 2**62 - 2), zeros=st.integers(0, 3))
def test_group_numbers_round_trip(n: int, zeros: int) -> None:
    assert parse_group(str(n)) == n
    padded = "0" * zeros + str(n)
    if len(padded) <= len(str(2**62 - 1)):
        assert parse_group(padded) == n
    else:  # longer than any group number written out: refused before int() reads it
        with pytest.raises(BadRequest):
            parse_group(padded)


@FUZZ
@given(a=st.text(max_size=30), b=st.text(max_size=30))
def test_path_algebra(a: str, b: str) -> None:
    na, nb = norm(a), norm(b)
    assert norm(na) == na and "//" not in na and not na.startswith("/") and not na.endswith("/")
    assert has_prefix(join(na, nb), na) and strip(join(na, nb), na) == nb
    # Segment-wise: "a" covers "a/b" (above) but never "ax".
    assert has_prefix(na, "") and (na == "" or not has_prefix(na + "x", na))


# ----------------------------------------------------------------------------- tokens
grant = st.text(alphabet="abcxyz019-_/", max_size=16)


@FUZZ
@given(root=grant, put=st.lists(grant, max_size=3), get=st.lists(grant, max_size=3),
       expires=st.none() | st.integers(1_700_000_000, MAX_TIME_CLAIM), issued=st.none() | st.integers(0, MAX_TIME_CLAIM))
def test_tokens_round_trip(root: str, put: list[str], get: list[str], expires: int | None, issued: int | None) -> None:
    if not put and not get:
        put = [""]
    claims = VERIFIER.verify(sign_token(KEY, root=root, put=put, get=get, expires=expires, issued=issued),
                             now=1_700_000_000)
    # Legacy prefixes read as their subtrees (0.17 §2.4), only exact duplicates dropped.
    assert (claims.root, claims.publish, claims.subscribe, claims.exp) == (
        norm(root), distinct(Pattern.subtree(p) for p in put), distinct(Pattern.subtree(g) for g in get), expires)


json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                          max_leaves=6)


@FUZZ
@given(claim=st.sampled_from(["exp", "nbf", "iat"]), value=json_value)
def test_time_claims_are_whole_seconds_in_range_or_refused(claim: str, value: Any) -> None:
    whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()  # no inf, nan
    valid = value is None or not isinstance(value, bool) and whole and 0 <= value <= MAX_TIME_CLAIM
    try:
        # Clocks at which a valid exp has not expired and a valid nbf has passed.
        claims = claims_from_payload({"get": "", claim: value}, now=0 if claim != "nbf" else 2**64)
    except AuthError as exc:
        assert not valid and f"claim {claim} " in exc.reason, (value, exc.reason)
        return
    assert valid, value
    assert claims.exp == (int(value) if claim == "exp" and value is not None else None)
    assert claims.exp is None or type(claims.exp) is int


@FUZZ
@given(payload=st.dictionaries(st.sampled_from(["root", "put", "get", "pub", "sub", "publish", "subscribe", "exp",
                                                "nbf", "iat", "aud", "cluster", "x"]), json_value, max_size=6))
def test_any_signed_claims_give_claims_or_auth_error(payload: dict[str, Any]) -> None:
    try:
        claims = VERIFIER.verify(signed(json.dumps(payload).encode()), now=1_700_000_000)
    except AuthError:
        return
    assert claims.publish or claims.subscribe
    assert isinstance(claims.root, str)
    assert all(isinstance(p, Pattern) for p in (*claims.publish, *claims.subscribe))
