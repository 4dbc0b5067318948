"""Codecs against the bytes the seed-era JS client `@kixelated/moq` 0.9.4 writes, captured from
Node.js 20 through its WebSocket polyfill (`@kixelated/web-transport-ws` 0.1.2): the legacy
CLIENT_SETUP with id-length-value parameters, the `webtransport` wire's frames, and its lite-01
messages. Every malformed or truncated variant must be a named decode error, never a crash.
"""

from __future__ import annotations

import pytest

from relay.protocol.lite import legacy
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.version import Version
from relay.transport import polyfill, qmux


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


V1 = Version.LITE_01

# CLIENT_SETUP as the JS client writes it on its first bidi stream: varint 0x20, u16 length 34,
# versions [lite-01, draft-14], 2 parameters: 2 = [0x3f], 5 = "moq-lite-js" (id, length, bytes).
JS_CLIENT_SETUP = h("20 0022 02 c0000000ff0dad01 c0000000ff00000e 02 02 01 3f 05 0b 6d6f712d6c6974652d6a73")
# The same, as moq-rs 0.4.18 writes it (draft-14 pairs: even keys carry a bare varint).
RS_CLIENT_SETUP = h("20 003a 03 c0000000ff0dad02 c0000000ff0dad01 c0000000ff00000e 04 02 c0000000ffffffff"
                    " 80040b5a 01 80040b5c 01 07 0b 6d6f712d6c6974652d7273")
# Our answer, which both decode: lite-01 selected, no parameters.
SERVER_SETUP_01 = h("21 0009 c0000000ff0dad01 00")

# What the polyfill put on the WebSocket for that SETUP: one message per write() of the library.
JS_SETUP_MESSAGES = [h("08 00 20"), h("08 00 0022"),
                     h("08 00 02 c0000000ff0dad01 c0000000ff00000e 02 02 01 3f 05 0b 6d6f712d6c6974652d6a73")]


# ------------------------------------------------------------------------------- legacy SETUP
def test_js_client_setup_is_read_as_id_length_value() -> None:
    assert JS_CLIENT_SETUP[0] == legacy.LEGACY_CLIENT_SETUP
    assert int.from_bytes(JS_CLIENT_SETUP[1:3], "big") == len(JS_CLIENT_SETUP) - 3
    setup = legacy.LegacyClientSetup.decode(JS_CLIENT_SETUP[3:])
    assert setup.versions == [0xFF0DAD01, 0xFF00000E]
    assert Version.from_setup_code(setup.versions[0]) == V1
    assert setup.params_encoding is legacy.LegacyParams.TLV
    assert setup.params == {2: b"\x3f", 5: b"moq-lite-js"}
    assert setup.path is None
    # Re-encoding in the same encoding gives the client's bytes back.
    assert setup.encode() == JS_CLIENT_SETUP


def test_js_client_setup_does_not_fit_draft14() -> None:
    """What the relay used to say: read as draft-14, key 2 takes `01` as its value, then key
    0x3f (odd) takes 5 bytes and 7 bytes are left over."""
    with pytest.raises(ProtocolError, match="7 trailing bytes"):
        legacy._legacy_params(JS_CLIENT_SETUP[20:], legacy.LegacyParams.KVP)
    with pytest.raises(ProtocolError, match="beyond|exceeds"):
        legacy._legacy_params(RS_CLIENT_SETUP[28:], legacy.LegacyParams.TLV)  # len 0xffffffff


def test_rust_client_setup_still_reads_as_draft14() -> None:
    setup = legacy.LegacyClientSetup.decode(RS_CLIENT_SETUP[3:])
    assert setup.params_encoding is legacy.LegacyParams.KVP
    assert setup.versions == [0xFF0DAD02, 0xFF0DAD01, 0xFF00000E]
    assert setup.params == {2: 0xFFFFFFFF, 0x040B5A: 1, 0x040B5C: 1, 7: b"moq-lite-rs"}
    assert setup.encode() == RS_CLIENT_SETUP


def test_path_reads_the_same_in_both_encodings() -> None:
    path = b"/anon?jwt=abc"
    tlv = legacy.LegacyClientSetup([0xFF0DAD01], {2: b"\x3f", 1: path}, legacy.LegacyParams.TLV).encode()
    kvp = legacy.LegacyClientSetup([0xFF0DAD02], {2: 0xFFFFFFFF, 1: path}).encode()
    assert legacy.LegacyClientSetup.decode(tlv[3:]).path == "/anon?jwt=abc"
    assert legacy.LegacyClientSetup.decode(kvp[3:]).path == "/anon?jwt=abc"


def test_server_setup_reads_the_same_for_both_clients() -> None:
    assert legacy.LegacyServerSetup(V1.setup_code).encode() == SERVER_SETUP_01
    decoded = legacy.LegacyServerSetup.decode(SERVER_SETUP_01[3:])
    assert decoded.version == 0xFF0DAD01 and decoded.params == {}


def test_bytes_fitting_both_encodings() -> None:
    # KVP: {2: 1, 1: b"\x00"}; TLV: {2: b"\x01", 1: b""}: the paths differ, so it is refused.
    with pytest.raises(ProtocolError, match="ambiguous"):
        legacy.decode_legacy_params(h("02 02 01 01 01 00"), "CLIENT_SETUP")
    # Both fit and agree on the (absent) path: the draft-14 reading is taken.
    encoding, params = legacy.decode_legacy_params(h("02 02 00 04 00"), "CLIENT_SETUP")
    assert encoding is legacy.LegacyParams.KVP and params == {2: 0, 4: 0}


def test_truncations_of_the_js_setup_are_decode_errors() -> None:
    """Cut anywhere, the body fails with a ProtocolError (nothing else escapes), except one cut
    that happens to be a valid draft-14 body: `... 02 | 02 01 | 3f 05 0b6d6f712d` = key 2 value 1,
    key 0x3f with 5 bytes. Nothing can tell that from a real message: the u16 length decides."""
    parsed = []
    body = JS_CLIENT_SETUP[3:]
    for cut in range(len(body)):
        try:
            setup = legacy.LegacyClientSetup.decode(body[:cut])
        except ProtocolError:
            continue
        parsed.append((cut, setup.params_encoding, setup.params))
    assert parsed == [(27, legacy.LegacyParams.KVP, {2: 1, 0x3F: h("0b 6d6f712d")})]


@pytest.mark.parametrize("body, code", [
    (h("02 c0000000ff0dad01 c0000000ff00000e 02 02 01 3f 05 0b 6d6f712d6c6974652d6a73 00"), ErrorCode.DECODE),
    (h("02 c0000000ff0dad01 c0000000ff00000e 02 05 01 41 05 01 42"), ErrorCode.DECODE),  # duplicate key 5
    (h("02 c0000000ff0dad01 c0000000ff00000e 41 00"), ErrorCode.DECODE),  # 64 parameters claimed
    (h("01 c0000000ff0dad01 01 01 02 ff fe"), ErrorCode.DECODE),  # path not UTF-8 is caught below
    (h("41 00"), ErrorCode.BOUNDS_EXCEEDED),  # 64 versions
    (h(""), ErrorCode.DECODE),
])
def test_malformed_js_setups(body: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        setup = legacy.LegacyClientSetup.decode(body)
        setup.path  # noqa: B018  (decoding the path is where bad UTF-8 shows)
    assert info.value.code == code


def test_too_many_parameters_is_named() -> None:
    body = h("01 c0000000ff0dad01") + m.varint(65) + b"".join(m.varint(2 * k + 1) + b"\x00" for k in range(65))
    with pytest.raises(ProtocolError, match="parameters"):
        legacy.LegacyClientSetup.decode(body)


# ------------------------------------------------------------------------------- the `webtransport` wire
def feed(conn: polyfill.PolyfillConnection, *messages: bytes) -> list:
    for message in messages:
        conn.receive_message(message)
    return conn.events()


def test_js_setup_messages_reassemble_into_the_client_setup() -> None:
    conn = polyfill.PolyfillConnection()
    events = feed(conn, *JS_SETUP_MESSAGES)
    assert all(isinstance(e, qmux.StreamData) and e.stream_id == 0 and not e.fin for e in events)
    assert b"".join(e.data for e in events) == JS_CLIENT_SETUP


def test_our_frames_are_what_the_js_polyfill_decodes() -> None:
    conn = polyfill.PolyfillConnection()
    feed(conn, *JS_SETUP_MESSAGES)
    conn.send_stream_data(0, SERVER_SETUP_01)
    announce = conn.open_stream(uni=False)  # our first bidi stream: id 1
    conn.send_stream_data(announce, m.encode_bi_type(m.BiStream.ANNOUNCE) + m.AnnounceRequest("").encode(V1))
    group = conn.open_stream(uni=True)  # our first uni stream: id 3
    conn.send_stream_data(group, h("00") + m.GroupHeader(0, 0).encode(V1), fin=False)
    conn.send_stream_data(group, m.encode_frame(V1, b"rustcam-0-a"), fin=True)
    assert conn.messages_to_send() == [
        h("08 00 21 0009 c0000000ff0dad01 00"),  # what the client read in the capture
        h("08 01 01 01 00"),
        h("08 03 00 02 00 00"),
        h("09 03 0b 72757374 63616d2d 302d61"),  # the last chunk carries the FIN
    ]
    conn.reset_stream(announce, 13)
    conn.stop_sending(0, 0)
    conn.close(0, "bye")
    assert conn.messages_to_send() == [h("04 01 0d"), h("05 00 00"), h("1d 00 627965")]


def test_js_publisher_flow_decodes() -> None:
    """The JS publisher's replies to our announce request and subscription, and a group stream
    (client uni stream 2), as captured; each message is one frame."""
    conn = polyfill.PolyfillConnection()
    feed(conn, *JS_SETUP_MESSAGES)
    announce = conn.open_stream(uni=False)
    subscribe = conn.open_stream(uni=False)
    assert (announce, subscribe) == (1, 5)
    events = feed(conn, h("08 01 09"), h("08 01 01 07 7365656463616d"),  # ANNOUNCE_INIT ["seedcam"]
                  h("08 05 01"), h("08 05 00"),  # SUBSCRIBE_OK priority 0
                  h("08 02 00"), h("08 02 02"), h("08 02 00 00"),  # group stream: type, GROUP sub 0 seq 0
                  h("08 02 0d"), h("08 02 7365656463616d206730206630"),  # FRAME "seedcam g0 f0"
                  h("09 02"), h("1d 00"))
    data: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, qmux.StreamData):
            data[e.stream_id] = data.get(e.stream_id, b"") + e.data
    assert m.AnnounceInit.decode(data[1][1:], V1).suffixes == ["seedcam"]
    assert m.SubscribeOk.decode(data[5][1:], V1).priority == 0
    assert data[2][0] == m.UniStream.GROUP
    header = m.GroupHeader.decode(data[2][2:4], V1)
    assert (header.subscribe_id, header.sequence) == (0, 0)
    assert data[2][4:] == m.encode_frame(V1, b"seedcam g0 f0")
    assert isinstance(events[-2], qmux.StreamData) and events[-2].fin
    assert events[-1] == qmux.ConnectionClosed(0, "", True)
    assert conn.closed


def test_js_subscriber_messages_decode_as_lite01() -> None:
    # ANNOUNCE_PLEASE (client bidi 4): type 1, prefix "".
    assert m.AnnounceRequest.decode(h("00"), V1).prefix == ""
    # SUBSCRIBE (client bidi 8): id 0, "rustcam", "seconds", priority 1 — and id 63, which the
    # library's u62 writer puts in two bytes (`40 3f`, not minimal: it compares with `<`).
    sub = m.Subscribe.decode(h("00 07 7275737463616d 07 7365636f6e6473 01"), V1)
    assert (sub.id, sub.broadcast, sub.track, sub.priority) == (0, "rustcam", "seconds", 1)
    assert m.Subscribe.decode(h("403f 01 61 01 62 01"), V1).id == 63
    # Our replies, as the client decoded them in the capture.
    assert m.AnnounceInit(["rustcam"]).encode(V1) == h("09 01 07 72757374 63616d")
    assert m.SubscribeOk(priority=1).encode(V1) == h("01 01")
    assert m.GroupHeader(0, 2).encode(V1) == h("02 00 02")
    assert m.Announce(active=False, suffix="rustcam").encode(V1) == h("09 00 07 72757374 63616d")


@pytest.mark.parametrize("body, decode", [
    (h("00 07 7275737463616d 07 7365636f6e6473"), m.Subscribe.decode),  # no priority
    (h("00 07 7275737463616d 07 7365636f6e6473 01 00"), m.Subscribe.decode),  # a trailing byte
    (h("00 09 7275737463616d"), m.Subscribe.decode),  # path longer than the message
    (h(""), m.SubscribeOk.decode),
    (h("01 08 7365656463616d"), m.AnnounceInit.decode),  # suffix cut short
    (h("00"), m.GroupHeader.decode),
    (h("03 07 7365656463616d"), m.Announce.decode),  # status 3
])
def test_malformed_lite01_messages(body: bytes, decode) -> None:
    with pytest.raises(ProtocolError):
        decode(body, V1)


def test_streams_open_out_of_order_and_are_forgotten_when_done() -> None:
    conn = polyfill.PolyfillConnection()
    # Client bidi 4 arrives before bidi 0 (the library numbers streams when it creates them,
    # not when it first writes): both are open, in QUIC's implicit order.
    assert feed(conn, h("08 04 01")) == [qmux.StreamData(4, b"\x01", False)]
    assert feed(conn, h("08 00 20")) == [qmux.StreamData(0, b"\x20", False)]
    assert feed(conn, h("09 02 00")) == [qmux.StreamData(2, b"\x00", True)]
    conn.consumed(2, 1, fin_read=True)
    assert 2 not in conn._recv and conn._peer_live[True] == 0
    assert feed(conn, h("08 02 ff")) == []  # late frames for a finished stream are dropped
    conn.stop_sending(4, 0)
    assert feed(conn, h("08 04 aa"), h("04 04 00")) == []  # after our STOP_SENDING: data, its RESET


def test_peer_reset_and_stop() -> None:
    conn = polyfill.PolyfillConnection()
    feed(conn, h("08 00 20"))
    assert feed(conn, h("04 00 00")) == [qmux.StreamReset(0, 0)]
    uni = conn.open_stream(uni=True)
    assert feed(conn, h("05 03 00")) == [qmux.StopSending(uni, 0)]
    conn.reset_stream(uni, 0)  # what the driver answers
    assert feed(conn, h("05 03 00")) == []  # already over


def test_large_writes_are_chunked() -> None:
    conn = polyfill.PolyfillConnection()
    sid = conn.open_stream(uni=True)
    conn.send_stream_data(sid, bytes(40_000), fin=True)
    assert conn.pending(sid) == 40_000
    out = conn.messages_to_send()
    assert [len(x) - 2 for x in out] == [16384, 16384, 7232]
    assert [x[0] for x in out] == [polyfill.STREAM, polyfill.STREAM, polyfill.STREAM_FIN]
    assert conn.pending(sid) == 0 and sid not in conn._send


@pytest.mark.parametrize("messages", [
    [b""],  # empty: every message is one frame
    [h("0a 00")],  # unknown frame type
    [h("0e 00 00 01 20")],  # a QMux STREAM frame (with offset): not this wire
    [h("08")],  # no stream id
    [h("08 c0 00")],  # truncated stream id
    [h("04 00")],  # RESET_STREAM without its code
    [h("04 00 00 00")],  # RESET_STREAM with a final size (QMux's form)
    [h("05 00")],  # STOP_SENDING without its code
    [h("1d")],  # close without its code
    [h("08 03 00")],  # data on our own unidirectional stream
    [h("08 01 00")],  # data on a bidi stream of ours we never opened
    [h("05 02 00")],  # STOP_SENDING for the client's own unidirectional stream
    [h("09 02 00"), h("08 02 00")],  # data after FIN
    [h("08") + m.varint((10_001 << 2) | 2) + b"x"],  # more open streams than we allow
    [h("08 02") + bytes(polyfill.MAX_INCOMING_MESSAGE)],  # oversized
])
def test_malformed_wire_input_raises_polyfill_error_only(messages: list[bytes]) -> None:
    conn = polyfill.PolyfillConnection()
    with pytest.raises(polyfill.PolyfillError):
        feed(conn, *messages)


def test_a_peer_that_does_not_read_is_bounded() -> None:
    conn = polyfill.PolyfillConnection(max_streams=1 << 20)
    with pytest.raises(polyfill.PolyfillError, match="does not read"):
        for i in range(polyfill.MAX_CONTROL_BACKLOG + 2):
            sid = (i << 2) | 2
            conn.receive_message(h("08") + m.varint(sid) + b"\x00")
            conn.stop_sending(sid, 0)  # refused, as the driver does past its backlog


def test_nothing_is_received_or_sent_after_close() -> None:
    conn = polyfill.PolyfillConnection()
    sid = conn.open_stream(uni=True)
    conn.send_stream_data(sid, b"late")
    conn.close(6, "unauthorized")
    assert conn.messages_to_send() == [h("1d 06") + b"unauthorized"]
    assert feed(conn, h("0a")) == []  # ignored, not an error, once closed
