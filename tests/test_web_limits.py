"""Limits of the HTTP side (hypercorn under relay/web/serve.py, the WebSocket fallback): past
each, the offending connection alone is refused or closed while a canary on the same relay is
served. Over loopback, with the limits made small."""

from __future__ import annotations

import logging

import trio
import trio_websocket
from harness import Flag, in_thread, publish_until, read_groups, running_relay, wait_until
from test_qmux import CAPTURED_PARAMS

import relay.transport.websocket as websocket_module
import relay.web.app as web_app
import relay.web.serve as web_serve
from relay.protocol.lite import messages as m
from relay.protocol.lite.version import Version
from relay.transport import qmux


async def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request on a fresh connection: (the status line, the body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        out = bytearray()
        while b"\r\n\r\n" not in out:
            out += await stream.receive_some(65536)
        head, _, body = bytes(out).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                      if k.lower() == b"content-length")
        while len(body) < length:
            body += await stream.receive_some(65536)
        return lines[0], body


async def refused(port: int) -> bool:
    """Connect, ask for /health; True if the server closed the connection without an answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        try:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return await stream.receive_some(65536) == b""
        except trio.BrokenResourceError:  # a reset: the server closed before reading
            return True


async def waiting_fetch(port: int) -> trio.SocketStream:
    """A connection held open by a /fetch of a broadcast nobody publishes (it waits for it).
    (Connections that send nothing would do too, but hypercorn drops those after its 5 s
    keep-alive timeout, which would free the slots by itself.)"""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /fetch/nobody/v HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return stream


async def test_http_connections_are_bounded(tmp_path, monkeypatch, caplog) -> None:
    """With room for 3, three connections fill the server: a fourth is closed at once, with a
    log line and a counter; once one of the three goes, a canary request is answered."""
    caplog.set_level(logging.WARNING, logger="relay.web")
    monkeypatch.setattr(web_serve, "MAX_HTTP_CONNECTIONS", 3)
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        server = relay.handle.http_server
        assert server is not None and server.max_connections == 3
        with trio.fail_after(20):
            held = [await waiting_fetch(relay.port) for _ in range(3)]
            await wait_until(lambda: server.active == 3)
            assert await refused(relay.port)
            assert server.stats["refused_max_connections"] == 1 and server.active == 3
            assert any("connections open (the limit)" in r.getMessage() for r in caplog.records)
            await held.pop().aclose()
            await wait_until(lambda: server.active == 2)
            assert await http_get(relay.port, "/health") == (b"HTTP/1.1 200 ", b"ok\n")
            assert server.stats["refused_max_connections"] == 1
            for stream in held:
                await stream.aclose()


async def stalled_subscriber(port: int, broadcast: str, subscribed: trio.Event) -> None:
    """A QMux peer over WebSocket that grants the relay huge flow-control windows, subscribes
    to `broadcast`, then never reads again (its WebSocket queue of one message stays full, so
    TCP stops taking the relay's bytes). Returns when the relay is done with it."""
    peer = qmux.QmuxConnection(is_server=False, max_data=1 << 40, max_stream_data=1 << 40)
    async with trio_websocket.open_websocket("127.0.0.1", port, "/anon", use_ssl=False,
                                             subprotocols=["qmux-01.moq-lite-05"], message_queue_size=1) as ws:
        for message in peer.messages_to_send():
            await ws.send_message(message)
        peer.receive_message(await ws.get_message())  # the relay's transport parameters
        sid = peer.open_stream(uni=False)
        request = m.Subscribe(1, broadcast, "v", 1, False, 30_000, None, None).encode(Version.LITE_05)
        peer.send_stream_data(sid, m.encode_bi_type(m.BiStream.SUBSCRIBE) + request)
        for message in peer.messages_to_send():
            await ws.send_message(message)
        subscribed.set()
        await trio.sleep_forever()  # cancelled by the test


async def test_a_websocket_peer_that_stops_reading_is_closed_after_the_stall_timeout(
        tmp_path, monkeypatch, caplog) -> None:
    """A subscriber of a busy track over WebSocket stops reading, sending nothing either: once
    the relay's bytes for it have nowhere to go for STALL_TIMEOUT, its session and its TCP
    connection are closed, while a canary subscriber over WebSocket keeps receiving."""
    monkeypatch.setattr(websocket_module, "STALL_TIMEOUT", 1.0)
    stop = Flag()
    payload = bytes(32_000)
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        server = relay.handle.http_server
        assert server is not None
        url = relay.url("moql", "anon")
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(url, "busy", stop, period=0.01,
                                                           frames=lambda k: [payload + b"-%d" % k]))
            try:
                with trio.fail_after(60):
                    await wait_until(lambda: relay.handle.origin.best("anon/busy") is not None)
                    subscribed = trio.Event()
                    n.start_soon(stalled_subscriber, relay.port, "busy", subscribed)
                    await subscribed.wait()
                    await wait_until(lambda: server.active == 1)
                    before = len(relay.handle.sessions)
                    # Closed, and its HTTP connection gone (hypercorn's handler has returned).
                    await wait_until(lambda: server.active == 0, timeout=30)
                    assert len(relay.handle.sessions) == before - 1
                    assert server.stats["stalled"] == 1
                    assert any("did not take 64 KiB we sent in 1s" in r.getMessage() for r in caplog.records)
                    groups = await in_thread(lambda: read_groups(relay.url("ws", "anon"), "busy", 20, timeout=20))
                    seqs = [int(g.rsplit(b"-", 1)[1]) for g in groups]
                    assert len(seqs) == 20 and seqs == sorted(seqs)
            finally:
                stop.set()
                n.cancel_scope.cancel()


async def qmux_ping(port: int) -> bool:
    """A canary QMux session over WebSocket: a PING is answered."""
    async with trio_websocket.open_websocket("127.0.0.1", port, "/anon", use_ssl=False,
                                             subprotocols=["qmux-01.moq-lite-05"]) as ws:
        await ws.send_message(CAPTURED_PARAMS)
        await ws.send_message(qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(42))
        while True:
            if await ws.get_message() == qmux.enc(qmux.QX_PING_RESPONSE) + qmux.enc(42):
                return True


async def test_websocket_messages_over_the_size_limit_are_refused(tmp_path, monkeypatch) -> None:
    """hypercorn assembles WebSocket messages up to websocket.MAX_MESSAGE (made 64 KiB here): a
    larger one closes that WebSocket (1009, message too big); another session is served."""
    monkeypatch.setattr(websocket_module, "MAX_MESSAGE", 64 << 10)
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        with trio.fail_after(20):
            async with trio_websocket.open_websocket("127.0.0.1", relay.port, "/anon", use_ssl=False,
                                                     subprotocols=["qmux-01.moq-lite-05"]) as ws:
                await ws.send_message(CAPTURED_PARAMS)
                big = qmux.enc(0x0E) + qmux.enc(2) + qmux.enc(0) + qmux.enc(80 << 10) + bytes(80 << 10)
                await ws.send_message(big)  # 80 KiB on one stream: fine for QMux, not for hypercorn
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    assert exc.reason is not None and exc.reason.code == 1009, exc.reason
            assert await qmux_ping(relay.port)


async def test_http_fetch_waits_at_most_fetch_deadline(tmp_path, monkeypatch) -> None:
    """/fetch of a broadcast nobody announces waits FETCH_DEADLINE (made 1 s here), then 404;
    a canary request meanwhile is answered at once."""
    monkeypatch.setattr(web_app, "FETCH_DEADLINE", 1.0)
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                answers: list[tuple[bytes, bytes]] = []

                async def fetch() -> None:
                    answers.append(await http_get(relay.port, "/fetch/anon/nobody/v"))

                started = trio.current_time()
                n.start_soon(fetch)
                assert await http_get(relay.port, "/health") == (b"HTTP/1.1 200 ", b"ok\n")
                assert not answers and trio.current_time() - started < 1.0
            elapsed = trio.current_time() - started
        assert answers == [(b"HTTP/1.1 404 ", b"broadcast not announced\n")]
        assert 1.0 <= elapsed < 5.0, elapsed
