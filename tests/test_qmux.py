"""QMux over WebSocket: the sans-IO codec against captured bytes, flow control, bad input; and
WebSocket sessions that misbehave being closed alone."""

from __future__ import annotations

import asyncio

import moq
import pytest
import trio
import trio_websocket
from harness import Flag, client, in_thread, running_relay

from relay.transport import qmux
from relay.transport.websocket import select_subprotocol

CAPTURED_PARAMS = bytes.fromhex(
    "ff5153300d0a0d0a 37 01 04 80007530 04 04 80100000 05 04 80040000 06 04 80040000 07 04 80040000"
    " 08 02 4064 09 02 4064 20 02 7ffe c571c59429cd0845 02 7ffe 1d 00".replace(" ", ""))


def client_conn() -> qmux.QmuxConnection:
    return qmux.QmuxConnection(is_server=False)


def pair() -> tuple[qmux.QmuxConnection, qmux.QmuxConnection]:
    server, peer = qmux.QmuxConnection(is_server=True), client_conn()
    for m in peer.messages_to_send():
        server.receive_message(m)
    for m in server.messages_to_send():
        peer.receive_message(m)
    return server, peer


def pump(a: qmux.QmuxConnection, b: qmux.QmuxConnection) -> list:
    events = []
    for m in a.messages_to_send():
        b.receive_message(m)
    events += b.events()
    return events


def test_captured_client_bytes() -> None:
    server = qmux.QmuxConnection()
    server.receive_message(CAPTURED_PARAMS)
    params = server.peer_params
    assert params is not None and params[qmux.P_IDLE] == 30000 and params[qmux.P_STREAMS_UNI] == 100
    assert params[qmux.P_MAX_RECORD] == 16382 and params[0x1D] == b""
    # The client's lite-05 ANNOUNCE_REQUEST on its first bidi stream (lite §9.4).
    server.receive_message(bytes.fromhex("0e00000b0109 00c000d9477f2a4c32".replace(" ", "")))
    [ev] = server.events()
    assert ev == qmux.StreamData(0, bytes.fromhex("010900c000d9477f2a4c32"), False)
    server.receive_message(bytes.fromhex("0f000b00"))  # FIN at offset 11
    assert server.events() == [qmux.StreamData(0, b"", True)]
    # Our SETUP on our first uni stream with FIN: 0f 03 00 03 01 01 00.
    sid = server.open_stream(uni=True)
    assert sid == 3
    server.send_stream_data(sid, bytes.fromhex("010100"), fin=True)
    out = b"".join(server.messages_to_send())
    assert out.endswith(bytes.fromhex("0f03000301 0100".replace(" ", "")))


def test_moq_lite_js_stream_frames_without_offsets_continue_the_stream() -> None:
    """@moq/lite 0.2 (npm @moq/qmux 0.0.6) sends every STREAM frame without an Offset; the
    WebSocket keeps them in order, so each continues where the last ended. These are the bytes
    its CLIENT_SETUP came out as, captured through a proxy (one write per field)."""
    server = qmux.QmuxConnection()
    server.receive_message(CAPTURED_PARAMS)
    server.receive_message(bytes.fromhex("0a000120"))
    server.receive_message(bytes.fromhex("0a0002002c"))
    server.receive_message(bytes.fromhex("0a0003c0ffee"))
    data = b"".join(ev.data for ev in server.events() if isinstance(ev, qmux.StreamData))
    assert data == bytes.fromhex("20002cc0ffee")


def test_one_frame_per_message() -> None:
    """@moq/qmux decodes only the first frame of a message (and moq-rs sends one per message)."""
    server, peer = pair()
    sids = [server.open_stream(uni=True) for _ in range(3)]
    for sid in sids:
        server.send_stream_data(sid, b"x" * 10, fin=True)
    messages = server.messages_to_send()
    assert len(messages) == 3
    for m in messages:
        peer.receive_message(m)
    got = [ev for ev in peer.events() if isinstance(ev, qmux.StreamData)]
    assert sorted(ev.stream_id for ev in got) == sids and all(ev.data == b"x" * 10 and ev.fin for ev in got)


def test_ping_is_answered_and_close_reported() -> None:
    server, peer = pair()
    server.receive_message(qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(7))
    assert b"".join(server.messages_to_send()) == qmux.enc(qmux.QX_PING_RESPONSE) + qmux.enc(7)
    peer.close(0, "bye")
    assert pump(peer, server) == [qmux.ConnectionClosed(0, "bye", True)]


def test_flow_control_both_ways() -> None:
    server, peer = pair()
    sid = server.open_stream(uni=True)
    server.send_stream_data(sid, b"x" * (5 << 20))  # more than the peer's 4 MiB window
    got = sum(len(e.data) for e in pump(server, peer) if isinstance(e, qmux.StreamData))
    assert got == 4 << 20 and server.pending(sid) == 1 << 20
    peer.consumed(sid, 4 << 20)  # the peer reads: credit comes back and the rest flows
    for m in peer.messages_to_send():
        server.receive_message(m)
    got = sum(len(e.data) for e in pump(server, peer) if isinstance(e, qmux.StreamData))
    assert got == 1 << 20 and server.pending(sid) == 0
    # A peer sending past the window we granted is a flow-control error.
    bad = qmux.enc(0x0E) + qmux.enc(0) + qmux.enc(0) + qmux.enc(5 << 20) + bytes(5 << 20)
    with pytest.raises(qmux.QmuxError):
        qmux.QmuxConnection().receive_message(CAPTURED_PARAMS + bad)


def test_stream_limits_and_credit_return() -> None:
    server = qmux.QmuxConnection(max_streams=4)
    server.receive_message(CAPTURED_PARAMS)
    for n in range(4):
        server.receive_message(qmux.enc(0x0F) + qmux.enc((n << 2) | 2) + qmux.enc(0) + qmux.enc(1) + b"a")
    server.events()
    with pytest.raises(qmux.QmuxError):  # a fifth uni stream beyond the 4 granted
        server.receive_message(qmux.enc(0x0F) + qmux.enc((4 << 2) | 2) + qmux.enc(0) + qmux.enc(0))
    server2 = qmux.QmuxConnection(max_streams=4)
    server2.receive_message(CAPTURED_PARAMS)
    for n in range(3):
        sid = (n << 2) | 2
        server2.receive_message(qmux.enc(0x0F) + qmux.enc(sid) + qmux.enc(0) + qmux.enc(1) + b"a")
        server2.consumed(sid, 1, fin_read=True)
    out = b"".join(server2.messages_to_send())
    assert qmux.enc(0x13) in out  # MAX_STREAMS uni raised as finished streams come back


@pytest.mark.parametrize(
    "message",
    [
        b"\x0e\x00",  # data before the transport parameters
        CAPTURED_PARAMS + b"\x40",  # truncated varint
        CAPTURED_PARAMS + b"\x21",  # unknown frame type
        CAPTURED_PARAMS + CAPTURED_PARAMS,  # parameters twice
        bytes.fromhex("ff5153300d0a0d0a 03 00 01 00".replace(" ", "")),  # forbidden parameter 0x00
        CAPTURED_PARAMS + qmux.enc(0x0E) + qmux.enc(3) + qmux.enc(0) + qmux.enc(1) + b"x",  # our uni stream
        CAPTURED_PARAMS + qmux.enc(0x0E) + qmux.enc(0) + qmux.enc(10) + qmux.enc(1) + b"x",  # a gap
    ],
)
def test_malformed_input_raises_qmux_error_only(message: bytes) -> None:
    with pytest.raises(qmux.QmuxError):
        qmux.QmuxConnection().receive_message(message)


def test_subprotocol_selection() -> None:
    ours = ["moq-lite-06", "moq-lite-05"]
    offer = ["qmux-02.moq-lite-06", "qmux-01.moq-lite-06", "qmux-00.moq-lite-06", "qmux-01.moq-lite-05",
             "qmux-02", "qmux-01", "webtransport"]
    assert select_subprotocol(offer, ours, True) == ("qmux-01.moq-lite-06", "moq-lite-06", 200)
    assert select_subprotocol(["qmux-00.moq-lite-05"], ours, True) == ("qmux-00.moq-lite-05", "moq-lite-05", 200)
    assert select_subprotocol(["qmux-02", "webtransport"], ours, True) == ("qmux-02", "", 200)
    # The pre-QMux polyfill wire (the seed-era JS client offers only it): legacy SETUP, last choice.
    assert select_subprotocol(["qmux-01.moq-lite-03", "webtransport"], ours, True) == ("webtransport", "", 200)
    assert select_subprotocol(["webtransport", "qmux-00"], ours, True) == ("qmux-00", "", 200)
    assert select_subprotocol(["webtransport"], ours, False)[2] == 400  # legacy versions disabled
    assert select_subprotocol([], ours, True)[2] == 400
    # IETF draft-14 (ALPN moq-00) the same way, after the moq-lite ALPNs in our order.
    ietf = ["qmux-01.moq-lite-06", "qmux-01.moq-00", "qmux-00.moq-00", "qmux-01.moqt-15"]
    assert select_subprotocol(ietf, [*ours, "moq-00"], False) == ("qmux-01.moq-lite-06", "moq-lite-06", 200)
    assert select_subprotocol(ietf, ["moq-00"], False) == ("qmux-01.moq-00", "moq-00", 200)
    assert select_subprotocol(["qmux-00.moq-00"], ["moq-00"], False) == ("qmux-00.moq-00", "moq-00", 200)
    assert select_subprotocol(["qmux-01.moqt-15"], ["moq-00"], False)[2] == 400


async def test_misbehaving_websocket_sessions_are_closed_alone(tmp_path) -> None:
    """Flood, oversized message, text message, stream past the limit: each closes that session
    only, while a real publisher and subscriber keep working through the same relay."""
    stop = Flag()
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        url = f"ws://127.0.0.1:{relay.port}/anon"

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("steady")
                t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
                b.announce()
                n = 0
                while not stop.event.is_set():
                    group = t.append_group()
                    group.write_frame(b"s%d" % n)
                    group.finish()
                    n += 1
                    await asyncio.sleep(0.05)

        async def misbehave(payload: list[bytes | str]) -> str:
            async with trio_websocket.open_websocket("127.0.0.1", relay.port, "/anon", use_ssl=False,
                                                   subprotocols=["qmux-01.moq-lite-05"]) as ws:
                try:
                    for message in payload:
                        await ws.send_message(message)
                    with trio.fail_after(10):
                        while True:
                            await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    return f"closed {exc.reason.code if exc.reason else ''}"
            return "not closed"

        flood_stream = [qmux.enc(0x0E) + qmux.enc(2) + qmux.enc(i * 1000) + qmux.enc(1000) + bytes(1000)
                        for i in range(5000)]  # 5 MB on one uni stream: past the 4 MiB window
        cases = {
            "text": [CAPTURED_PARAMS, "hello"],
            "oversized": [CAPTURED_PARAMS, bytes(2 << 20)],
            "flood": [CAPTURED_PARAMS, *flood_stream],
            "stream limit": [CAPTURED_PARAMS, qmux.enc(0x0F) + qmux.enc((20000 << 2) | 2) + qmux.enc(0) + qmux.enc(0)],
            "garbage": [CAPTURED_PARAMS, b"\x21\x00"],
        }
        outcomes = {}
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, publisher)
            try:
                with trio.fail_after(60):
                    for name, payload in cases.items():
                        outcomes[name] = await misbehave(payload)

                    async def viewer() -> list[bytes]:
                        async with client(url) as c:
                            consumer = await asyncio.wait_for(c.announced_broadcast("steady"), 10)
                            track = await consumer.subscribe_track("v", moq.Subscription(priority=1,
                                                                                         max_age_us=30_000_000))
                            group = await asyncio.wait_for(track.next_group(), 10)
                            return [f.payload async for f in group]
                    got = await in_thread(viewer)
            finally:
                stop.set()
    assert all(v.startswith("closed") for v in outcomes.values()), outcomes
    assert got and got[0].startswith(b"s")
