"""QuicEndpoint: raw QUIC and WebTransport over loopback, with a small aioquic test client and
the real Rust moq client."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
from typing import Any

import pytest
import trio

from relay.tls import generate_self_signed
from relay.transport.base import SessionClosed, TransportSession
from relay.transport.engines import available, get_engine
from relay.transport.quic import QuicEndpoint, WtDecision, code_from_wire, code_to_wire, moq_apps
from relay.transport.quic.udp import UdpSocket
from relay.transport.quic.webtransport import parse_sf_string_list

ENGINES = [
    "aioquic",
    pytest.param("qh3", marks=pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")),
]

IDENTITY = generate_self_signed(["localhost", "127.0.0.1"])
# A client without a connection ID, like Chromium's. (aioquic's client made so still issues
# NEW_CONNECTION_ID frames with empty IDs, which servers must refuse; qh3's does not.)
CID_LESS_CLIENT = "qh3"


# --------------------------------------------------------------------------- helpers


class TestClient:
    """A minimal trio driver around an aioquic client connection (optionally with HTTP/3)."""

    __test__ = False

    def __init__(self, addr: tuple[str, int], alpns: list[str], h3: bool = False, engine: str = "aioquic",
                 empty_cid: bool = False) -> None:
        # Same engine as the server: aioquic's ClientHello (with an ML-KEM key share) makes
        # qh3 2.1's server fail ("packet builder capacity exhausted").
        self.engine = get_engine(engine)
        cfg = self.engine.QuicConfiguration(is_client=True, alpn_protocols=alpns, max_datagram_frame_size=65536)
        cfg.verify_mode = ssl.CERT_NONE
        cfg.max_data = 64 << 20
        cfg.max_stream_data = 16 << 20
        if empty_cid:
            cfg.connection_id_length = 0
        self.quic = self.engine.QuicConnection(configuration=cfg)
        if empty_cid:
            without_connection_id(self.quic)
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.h3: Any = None
        self.use_h3 = h3
        self.data: dict[int, bytearray] = {}
        self.fin: set[int] = set()
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.raw_streams: set[int] = set()  # WT streams we opened: aioquic's client H3 cannot parse replies
        self.handshake = trio.Event()
        self.resets: dict[int, int] = {}
        self.terminated: Any = None
        self._changed = trio.Event()
        self._wake = trio.Event()

    def flush(self) -> None:
        for data, addr in self.quic.datagrams_to_send(trio.current_time()):
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                pass
        self._wake.set()

    def _events(self) -> None:
        h3e, qe = self.engine.h3e, self.engine.qe
        while (ev := self.quic.next_event()) is not None:
            if isinstance(ev, qe.HandshakeCompleted):
                if self.use_h3:
                    self.h3 = self.engine.H3Connection(self.quic, enable_webtransport=True)
                self.handshake.set()
            elif isinstance(ev, qe.ConnectionTerminated):
                self.terminated = ev
            elif isinstance(ev, qe.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
            if isinstance(ev, qe.StreamDataReceived) and ev.stream_id in self.raw_streams:
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.end_stream:
                    self.fin.add(ev.stream_id)
            elif self.h3 is not None:
                for hev in self.h3.handle_event(ev):
                    if isinstance(hev, h3e.HeadersReceived):
                        self.headers[hev.stream_id] = dict(hev.headers)
                    elif isinstance(hev, (h3e.WebTransportStreamDataReceived, h3e.DataReceived)):
                        self.data.setdefault(hev.stream_id, bytearray()).extend(hev.data)
                        if hev.stream_ended:
                            self.fin.add(hev.stream_id)
            elif isinstance(ev, qe.StreamDataReceived):
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.end_stream:
                    self.fin.add(ev.stream_id)
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.quic.connect(self.addr, trio.current_time())
        self.flush()
        task_status.started()
        while True:
            t = self.quic.get_timer()
            with trio.move_on_at(math.inf if t is None else t):
                self._wake = trio.Event()
                async with trio.open_nursery() as n:

                    async def readable() -> None:
                        await trio.lowlevel.wait_readable(self.sock)
                        n.cancel_scope.cancel()

                    async def woken() -> None:
                        await self._wake.wait()
                        n.cancel_scope.cancel()

                    n.start_soon(readable)
                    n.start_soon(woken)
            now = trio.current_time()
            while True:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except BlockingIOError:
                    break
                self.quic.receive_datagram(data, addr, now)
            if t is not None and now >= t:
                self.quic.handle_timer(now)
            self._events()
            for data, addr in self.quic.datagrams_to_send(now):
                try:
                    self.sock.sendto(data, addr)
                except BlockingIOError:
                    pass

    async def wait_for(self, cond: Any) -> None:
        while not cond():
            await self._changed.wait()


def without_connection_id(quic: Any) -> None:
    """Make a client connection built with connection_id_length = 0 behave like Chromium's: no
    connection ID of its own, and a random 8-byte one for the server's first Initial (the
    engines would otherwise make that one empty too)."""
    odcid = os.urandom(8)
    if hasattr(quic, "_peer_cid"):  # aioquic
        quic._peer_cid.cid = odcid
    quic._original_destination_connection_id = odcid
    assert quic.host_cid == b""


async def echo_handler(session: TransportSession) -> None:
    async def echo(send: Any, recv: Any) -> None:
        while chunk := await recv.read(65536):
            await send.write(chunk)
        await send.finish()

    async with trio.open_nursery() as n:
        while True:
            try:
                send, recv = await session.accept_bi()
            except SessionClosed:
                return
            n.start_soon(echo, send, recv)


def endpoint(engine: str, alpns: list[str], handler: Any = echo_handler, wt_select: Any = None,
             **kw: Any) -> QuicEndpoint:
    return QuicEndpoint([("127.0.0.1", 0)], IDENTITY, moq_apps(alpns, wt_select), handler, engine=engine, **kw)


# --------------------------------------------------------------------------- unit


def test_code_mapping() -> None:
    for c in (0, 1, 0x1D, 0x1E, 0x1F, 1000, 0xFFFFFFFF):
        assert code_from_wire(code_to_wire(c)) == c
    assert code_to_wire(1) == 0x52E4A40FA8DC
    assert code_from_wire(0) is None
    assert code_from_wire(0x52E4A40FA8DB + 0x1E) is None  # GREASE


def test_sf_list() -> None:
    assert parse_sf_string_list('"moq-lite-05", "moq-lite-04";q=1, moql') == ["moq-lite-05", "moq-lite-04", "moql"]
    assert parse_sf_string_list('"a\\"b"') == ['a"b']
    assert parse_sf_string_list("") == []


# --------------------------------------------------------------------------- raw QUIC


@pytest.mark.parametrize("engine", ENGINES)
async def test_raw_quic_many_streams(engine: str) -> None:
    ep = endpoint(engine, ["moq-lite-03"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            host, port = ep.addresses[0]
            cl = TestClient((host, port), ["moq-lite-03"], engine=engine)
            await nursery.start(cl.run)
            await cl.handshake.wait()
            n = 300 if engine == "aioquic" else 90  # qh3's native core fixes 100 concurrent bidi
            sids = []
            for i in range(n):
                sid = cl.quic.get_next_available_stream_id()
                cl.quic.send_stream_data(sid, b"hello %d" % i, end_stream=True)
                sids.append(sid)
            cl.flush()
            await cl.wait_for(lambda: all(s in cl.fin for s in sids))
            for i, sid in enumerate(sids):
                assert bytes(cl.data[sid]) == b"hello %d" % i
            assert len(ep.connections) == 1
            assert ep.connections[0].alpn == "moq-lite-03"
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("engine", ENGINES)
async def test_raw_quic_4mib(engine: str) -> None:
    ep = endpoint(engine, ["moq-lite-03"])
    payload = os.urandom(4 << 20)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            cl = TestClient(ep.addresses[0], ["moq-lite-03"], engine=engine)
            await nursery.start(cl.run)
            await cl.handshake.wait()
            sid = cl.quic.get_next_available_stream_id()
            cl.quic.send_stream_data(sid, payload, end_stream=True)
            cl.flush()
            await cl.wait_for(lambda: sid in cl.fin)
            assert bytes(cl.data[sid]) == payload
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("engine", ENGINES)
async def test_server_streams_reset_and_close(engine: str) -> None:
    """Server-opened streams, reset codes mapped on the wire, close code on CONNECTION_CLOSE."""
    done = trio.Event()

    async def handler(session: TransportSession) -> None:
        assert session.info.transport == "quic" and session.info.path is None
        uni = await session.open_uni()
        await uni.write(b"uni-data")
        await uni.finish()
        send, recv = await session.open_bi()
        await send.write(b"x")
        send.reset(7)
        await done.wait()
        session.close(42, "bye")

    ep = endpoint(engine, ["moq-lite-05"], handler)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            cl = TestClient(ep.addresses[0], ["moq-lite-05"], engine=engine)
            resets: list[Any] = []
            orig = cl._events

            def spy() -> None:
                # peek at the events for RESET_STREAM before the client consumes them
                evs = []
                while (ev := cl.quic.next_event()) is not None:
                    evs.append(ev)
                    if isinstance(ev, cl.engine.qe.StreamReset):
                        resets.append(ev)
                cl.quic._events.extend(evs)
                orig()

            cl._events = spy  # type: ignore[method-assign]
            await nursery.start(cl.run)
            await cl.wait_for(lambda: 3 in cl.fin and resets)
            assert bytes(cl.data[3]) == b"uni-data"
            assert resets[0].stream_id == 1 and code_from_wire(resets[0].error_code) == 7
            done.set()
            await cl.wait_for(lambda: cl.terminated is not None)
            assert cl.terminated.error_code == 42
            nursery.cancel_scope.cancel()


GREASE_VERSION = 0x1A2A3A4A  # reserved for forcing Version Negotiation (RFC 9000 §15)


def long_header(version: int, dcid: bytes, scid: bytes, size: int, first: int = 0xC0) -> bytes:
    head = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    return head + os.urandom(size - len(head))


def v1_initial(dcid: bytes, size: int) -> bytes:
    """A well-formed v1 Initial header (no token, a length covering the rest) padded to `size`."""
    head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([0]) + bytes([0])
    rest = size - len(head) - 2
    return head + (0x4000 | rest).to_bytes(2, "big") + os.urandom(rest)


async def version_negotiation_reply(s: Any, dcid: bytes, scid: bytes) -> bytes:
    """Send a datagram of an unknown version that asks for Version Negotiation, return the reply.
    Datagrams sent before it on the same socket were read (and routed) before it."""
    await s.send(long_header(GREASE_VERSION, dcid, scid, 1200))
    while True:
        reply = await s.recv(65535)
        if reply[6 : 6 + reply[5]] == scid:
            return reply


@pytest.mark.parametrize("engine", ENGINES)
async def test_unknown_version_gets_version_negotiation(engine: str) -> None:
    ep = endpoint(engine, ["moq-lite-03"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as s:
                await s.connect(ep.addresses[0])
                dcid, scid = os.urandom(8), os.urandom(5)
                reply = await version_negotiation_reply(s, dcid, scid)
            # RFC 9000 §17.2.1, decoded by hand: long header, version 0, the IDs swapped, versions.
            assert reply[0] & 0x80
            assert int.from_bytes(reply[1:5], "big") == 0
            assert reply[5] == len(scid) and reply[6 : 6 + len(scid)] == scid
            at = 6 + len(scid)
            assert reply[at] == len(dcid) and reply[at + 1 : at + 1 + len(dcid)] == dcid
            listed = reply[at + 1 + len(dcid) :]
            versions = [int.from_bytes(listed[i : i + 4], "big") for i in range(0, len(listed), 4)]
            assert 1 in versions and GREASE_VERSION not in versions
            assert versions == [int(v) for v in ep.configuration.supported_versions]
            # ... and by the engine's own parser.
            eng = get_engine(engine)
            header = eng.parse_header(reply, 8)
            assert header.packet_type == eng.QuicPacketType.VERSION_NEGOTIATION
            assert list(header.supported_versions) == versions
            assert ep.stats["version_negotiation"] == 1
            assert ep.connections == []
            nursery.cancel_scope.cancel()


async def test_unknown_version_small_or_negotiation_gets_no_reply() -> None:
    """Under 1200 bytes an unknown version is dropped (RFC 9000 §6.1), and a Version Negotiation
    packet is never answered: the only reply is to the large datagram sent after them."""
    ep = endpoint("aioquic", ["moq-lite-03"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as s:
                await s.connect(ep.addresses[0])
                small_scid, vn_scid = os.urandom(5), os.urandom(6)
                await s.send(long_header(GREASE_VERSION, os.urandom(8), small_scid, 1199))
                await s.send(long_header(0, os.urandom(8), vn_scid, 1200, first=0x80))
                scid = os.urandom(7)
                reply = await version_negotiation_reply(s, os.urandom(8), scid)
                assert reply[6 : 6 + len(scid)] == scid
            assert ep.stats["version_negotiation"] == 1
            assert ep.stats["dropped"] == 2
            nursery.cancel_scope.cancel()


async def test_short_initial_creates_no_connection() -> None:
    ep = endpoint("aioquic", ["moq-lite-03"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as s:
                await s.connect(ep.addresses[0])
                await s.send(v1_initial(os.urandom(8), 1100))
                await s.send(os.urandom(50))  # junk short header
                await s.send(bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + os.urandom(8))  # truncated
                await version_negotiation_reply(s, os.urandom(8), os.urandom(5))  # the others were routed
            assert ep.stats["dropped_short_initial"] == 1
            assert ep.stats["dropped"] == 2
            assert ep.connections == []
            nursery.cancel_scope.cancel()


async def test_ipv4_and_ipv6_same_port() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    ep = QuicEndpoint([("127.0.0.1", port), ("::1", port)], IDENTITY, moq_apps(["moq-lite-03"]), echo_handler)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(ep.serve)
            except OSError as e:
                pytest.skip(f"cannot bind ::1: {e}")
            assert [a[1] for a in ep.addresses] == [port, port]
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- WebTransport


async def wt_select(path: str, offered: list[str], headers: dict[str, str], info: object) -> WtDecision:
    if path.startswith("/forbidden"):
        return WtDecision(403, None)
    for p in offered:
        if p in ("moq-lite-03", "moq-lite-04"):
            return WtDecision(200, p, extra={"seen_path": path})
    return WtDecision(200, None)


@pytest.mark.parametrize("engine", ENGINES)
async def test_webtransport_connect_and_streams(engine: str) -> None:
    infos: list[Any] = []

    async def handler(session: TransportSession) -> None:
        infos.append(session.info)
        await echo_handler(session)

    ep = endpoint(engine, ["h3", "moq-lite-03"], handler, wt_select=wt_select)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            cl = TestClient(ep.addresses[0], ["h3"], h3=True, engine=engine)
            await nursery.start(cl.run)
            await cl.handshake.wait()
            req = cl.quic.get_next_available_stream_id()
            cl.h3.send_headers(
                req,
                [
                    (b":method", b"CONNECT"),
                    (b":protocol", b"webtransport"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/room?jwt=x"),
                    (b"wt-available-protocols", b'"moq-lite-05", "moq-lite-04", "moq-lite-03"'),
                ],
            )
            cl.flush()
            await cl.wait_for(lambda: req in cl.headers)
            h = cl.headers[req]
            assert h[b":status"] == b"200"
            assert h[b"wt-protocol"] == b'"moq-lite-04"'
            # 20 bidi WebTransport streams echoed
            sids = []
            for i in range(20):
                sid = cl.h3.create_webtransport_stream(req, is_unidirectional=False)
                cl.raw_streams.add(sid)
                cl.quic.send_stream_data(sid, b"wt %d" % i, end_stream=True)
                sids.append(sid)
            cl.flush()
            await cl.wait_for(lambda: all(s in cl.fin for s in sids))
            for i, sid in enumerate(sids):
                assert bytes(cl.data[sid]) == b"wt %d" % i
            assert infos[0].transport == "webtransport"
            assert infos[0].protocol == "moq-lite-04"
            assert infos[0].path == "/room?jwt=x"
            assert infos[0].extra == {"seen_path": "/room?jwt=x"}
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("engine", ENGINES)
async def test_webtransport_rejected_and_404(engine: str) -> None:
    ep = endpoint(engine, ["h3"], echo_handler, wt_select=wt_select)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            cl = TestClient(ep.addresses[0], ["h3"], h3=True, engine=engine)
            await nursery.start(cl.run)
            await cl.handshake.wait()
            req = cl.quic.get_next_available_stream_id()
            base = [(b":scheme", b"https"), (b":authority", b"localhost")]
            cl.h3.send_headers(
                req,
                [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":path", b"/forbidden")] + base,
            )
            req2 = req + 4
            cl.h3.send_headers(req2, [(b":method", b"GET"), (b":path", b"/")] + base, end_stream=True)
            cl.flush()
            await cl.wait_for(lambda: req in cl.headers and req2 in cl.headers)
            assert cl.headers[req][b":status"] == b"403"
            assert cl.headers[req2][b":status"] == b"404"
            assert ep.connections[0].session is None
            nursery.cancel_scope.cancel()


def wt_connect(cl: TestClient, path: bytes = b"/anon") -> int:
    req = cl.quic.get_next_available_stream_id()
    cl.h3.send_headers(req, [
        (b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
        (b":authority", b"localhost"), (b":path", path),
        (b"wt-available-protocols", b'"moq-lite-04", "moq-lite-03"'),
    ])
    cl.flush()
    return req


@pytest.mark.parametrize("engine", ENGINES)
async def test_webtransport_close_waits_for_the_capsule_ack(engine: str) -> None:
    """A session the relay closes sends the close capsule, then closes the QUIC connection once
    the peer acknowledged it: soon after, not after the grace period (this client never closes)."""
    from relay.transport.quic.webtransport import CLOSE_GRACE, CLOSE_WEBTRANSPORT_SESSION

    async def handler(session: TransportSession) -> None:
        session.close(5, "done")

    ep = endpoint(engine, ["h3"], handler, wt_select=wt_select)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            cl = TestClient(ep.addresses[0], ["h3"], h3=True, engine=engine)
            await nursery.start(cl.run)
            await cl.handshake.wait()
            req = wt_connect(cl)
            await cl.wait_for(lambda: req in cl.headers)
            started = trio.current_time()
            await cl.wait_for(lambda: cl.terminated is not None)
            elapsed = trio.current_time() - started
            assert req in cl.fin
            capsule = bytes(cl.data[req])
            assert capsule[:2] == (CLOSE_WEBTRANSPORT_SESSION | 0x4000).to_bytes(2, "big")
            assert capsule.endswith((5).to_bytes(4, "big") + b"done")
            assert code_from_wire(cl.terminated.error_code) == 5
            assert elapsed < CLOSE_GRACE / 2, elapsed
            nursery.cancel_scope.cancel()


@pytest.mark.skipif(not available(CID_LESS_CLIENT), reason=f"the client is {CID_LESS_CLIENT}, not installed")
@pytest.mark.parametrize("engine", ENGINES)
async def test_webtransport_client_without_connection_id(engine: str) -> None:
    """Chromium's QUIC client has a zero-length connection ID. qh3 cannot serve such a client
    (Engine.serves_empty_client_cid), so that connection is served by aioquic."""
    ep = endpoint(engine, ["h3"], echo_handler, wt_select=wt_select)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            cl = TestClient(ep.addresses[0], ["h3"], h3=True, engine=CID_LESS_CLIENT, empty_cid=True)
            await nursery.start(cl.run)
            await cl.handshake.wait()
            req = cl.quic.get_next_available_stream_id()
            cl.h3.send_headers(req, [
                (b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
                (b":authority", b"127.0.0.1"), (b":path", b"/anon"),
                (b"wt-available-protocols", b'"moq-lite-04", "moq-lite-03"'),
            ])
            cl.flush()
            await cl.wait_for(lambda: req in cl.headers)
            assert cl.headers[req][b":status"] == b"200"
            # Streams both ways over short-header packets addressed to the empty ID.
            sids = []
            for i in range(5):
                sid = cl.h3.create_webtransport_stream(req, is_unidirectional=False)
                cl.raw_streams.add(sid)
                cl.quic.send_stream_data(sid, b"cid-less %d" % i * 500, end_stream=True)
                sids.append(sid)
            cl.flush()
            await cl.wait_for(lambda: all(s in cl.fin for s in sids))
            assert [bytes(cl.data[s]) for s in sids] == [b"cid-less %d" % i * 500 for i in range(5)]
            (conn,) = ep.connections
            assert conn.engine.name == "aioquic"
            assert ep.stats["fallback_engine"] == (0 if engine == "aioquic" else 1)
            nursery.cancel_scope.cancel()


@pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")
@pytest.mark.parametrize("cid_length", [8, 0])
def test_qh3_serves_a_client_only_with_a_connection_id(cid_length: int) -> None:
    """Why the endpoint hands clients without a connection ID to aioquic: in memory, a qh3 server
    completes the handshake with a qh3 client that has an ID and not with one that has none.
    Once a qh3 release completes both, Engine.serves_empty_client_cid can say so."""
    qh3 = get_engine("qh3")
    cfg = qh3.QuicConfiguration(is_client=True, alpn_protocols=["h3"])
    cfg.verify_mode = ssl.CERT_NONE
    cfg.connection_id_length = cid_length
    client = qh3.QuicConnection(configuration=cfg)
    if not cid_length:
        without_connection_id(client)
    server_cfg = qh3.server_configuration(IDENTITY, ["h3"], idle_timeout=5, max_datagram_frame_size=65536,
                                          max_data=1 << 20, max_stream_data=1 << 20)
    server = qh3.new_server_connection(server_cfg, client.original_destination_connection_id)
    now, done = 0.0, False
    client.connect(("127.0.0.1", 4433), now)
    for _ in range(10):
        for data, _addr in client.datagrams_to_send(now):
            server.receive_datagram(data, ("127.0.0.1", 5000), now)
        for data, _addr in server.datagrams_to_send(now):
            client.receive_datagram(data, ("127.0.0.1", 4433), now)
        while (ev := server.next_event()) is not None:
            done = done or isinstance(ev, qh3.qe.HandshakeCompleted)
        while client.next_event() is not None:
            pass
        now += 0.01
    assert done == bool(cid_length)
    assert qh3.serves_empty_client_cid is False


# --------------------------------------------------------------------------- the real Rust client


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scheme", ["moql", "https"])
async def test_rust_client_connects(engine: str, scheme: str) -> None:
    import moq

    seen: list[Any] = []

    async def handler(session: TransportSession) -> None:
        seen.append(session.info)
        await session.wait_closed()  # lite-03 needs nothing from us: just keep the session open

    async def select(path: str, offered: list[str], headers: dict[str, str], info: object) -> WtDecision:
        return WtDecision(200, "moq-lite-03" if "moq-lite-03" in offered else None)

    ep = endpoint(engine, ["moq-lite-03", "h3"], handler, wt_select=select)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            port = ep.addresses[0][1]

            async def job() -> None:
                async with moq.Client(
                    f"{scheme}://127.0.0.1:{port}/anon", tls_verify=False, websocket_enabled=False, reconnect=False
                ):
                    await asyncio.sleep(0.2)

            await trio.to_thread.run_sync(asyncio.run, job())
            assert seen and seen[0].protocol == "moq-lite-03"
            assert seen[0].transport == ("quic" if scheme == "moql" else "webtransport")
            nursery.cancel_scope.cancel()


async def test_send_batch_segments_runs_and_keeps_order() -> None:
    """A flush of equal-sized datagrams leaves in GSO sends (where the kernel has it) and
    arrives as the same datagrams, in order, to the right peers."""
    ep = QuicEndpoint([("127.0.0.1", 0)], IDENTITY, moq_apps(["x"]), echo_handler)
    sender = UdpSocket(ep, "127.0.0.1", 0)
    rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for r in rx:
            r.bind(("127.0.0.1", 0))
            r.settimeout(5)
        a, b = rx[0].getsockname(), rx[1].getsockname()
        batch = [(bytes([i]) * 1200, a) for i in range(70)]  # over the 64-segment limit
        batch += [(b"tail" * 10, a), (b"B" * 1200, b), (b"B" * 1200, b), (b"x" * 1300, b), (b"y" * 1200, a)]
        sender.send_batch(batch)
        got: dict[Any, list[bytes]] = {a: [], b: []}
        for addr, r in ((a, rx[0]), (b, rx[1])):
            want = [d for d, to in batch if to == addr]
            while len(got[addr]) < len(want):
                got[addr].append(r.recv(65535))
            assert got[addr] == want
        if sender.gso:
            # 70 + tail: a run of 64, then 6 + the short tail; B's pair; nothing else coalesces.
            assert sender.stats["sendmsg_gso"] == 3
            assert sender.stats["datagrams_gso"] == 64 + 7 + 2
    finally:
        sender.close()
        for r in rx:
            r.close()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scheme", ["moql", "https"])
async def test_larger_datagrams_with_the_rust_client(tmp_path, engine: str, scheme: str) -> None:
    """`[server.quic] max_datagram_size = 1452`: the relay sends full-size datagrams and the real
    client takes them (a 1400-byte frame then fits one QUIC packet)."""
    from harness import Flag, in_thread, publish_until, read_groups, running_relay

    payloads = [bytes([i]) * 1400 for i in range(1, 256)]
    stop = Flag()
    async with running_relay(tmp_path, "moq-lite-06", engine=engine, quic="max_datagram_size = 1452") as relay:
        url = relay.url(scheme, "anon")

        def publish():
            return publish_until(url, "big", stop, period=0.02, frames=lambda n: [payloads[n % len(payloads)]])

        def watch():
            return read_groups(url, "big", 10, timeout=10)

        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publish)
                try:
                    got = await in_thread(watch)
                finally:
                    stop.set()
        assert len(got) == 10 and all(p in payloads for p in got)
        assert relay.handle.endpoint._sockets[0].largest_sent > 1300


def client_initial(engine: str, addr: tuple[str, int]) -> bytes:
    """The first datagram of a fresh client connection (a real, padded Initial with its own IDs)."""
    eng = get_engine(engine)
    cfg = eng.QuicConfiguration(is_client=True, alpn_protocols=["moq-lite-03"])
    quic = eng.QuicConnection(configuration=cfg)
    quic.connect(addr, 0.0)
    datagrams = quic.datagrams_to_send(0.0)
    assert datagrams and len(datagrams[0][0]) >= 1200
    return datagrams[0][0]


@pytest.mark.parametrize("engine", ENGINES)
async def test_pending_handshakes_are_bounded_and_expire(engine: str) -> None:
    """A flood of Initials that never finish their handshake holds at most `max_handshakes`
    connections, each for at most the handshake timeout; established ones are untouched."""
    ep = endpoint(engine, ["moq-lite-03"], max_handshakes=5, handshake_timeout=1.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            addr = ep.addresses[0]
            canary = TestClient(addr, ["moq-lite-03"], engine=engine)
            await nursery.start(canary.run)
            await canary.handshake.wait()
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as flood:
                await flood.connect(addr)
                for _ in range(20):
                    await flood.send(client_initial(engine, addr))
                while ep.stats["refused_pending_handshakes"] < 15:
                    await trio.sleep(0.01)  # the socket reader gets to them
                assert ep.pending_handshakes == 5 and len(ep.connections) == 6
                # The half-open ones are dropped after the timeout; the canary stays.
                with trio.fail_after(5):
                    while ep.pending_handshakes:
                        await trio.sleep(0.05)
                assert len(ep.connections) == 1 and canary.terminated is None
            # A new client gets in once the table has room again.
            late = TestClient(addr, ["moq-lite-03"], engine=engine)
            await nursery.start(late.run)
            await late.handshake.wait()
            assert len(ep.connections) == 2 and ep.stats["refused_pending_handshakes"] == 15
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_connection_that_asks_for_no_session_is_closed(engine: str) -> None:
    """An HTTP/3 client that completes the handshake and keeps the connection alive (PINGs) but
    never sends a WebTransport CONNECT is closed at the handshake deadline (relay-0.17 §6.2: a
    peer that never speaks is closed); one that asked for its session in time stays."""
    ep = endpoint(engine, ["h3", "moq-lite-03"], wt_select=wt_select, handshake_timeout=1.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            mute = TestClient(ep.addresses[0], ["h3"], h3=True, engine=engine)
            talker = TestClient(ep.addresses[0], ["h3"], h3=True, engine=engine)
            for cl in (mute, talker):
                await nursery.start(cl.run)
                await cl.handshake.wait()
            req = wt_connect(talker)
            await talker.wait_for(lambda: req in talker.headers)
            assert talker.headers[req][b":status"] == b"200"
            start = trio.current_time()
            while mute.terminated is None:
                with contextlib.suppress(Exception):  # qh3 refuses once it saw the close
                    mute.quic.send_ping(1)  # alive, but asking for nothing
                    mute.flush()
                await trio.sleep(0.2)
            waited = trio.current_time() - start
            assert mute.terminated.error_code == 0x100 and mute.terminated.reason_phrase == "no session"
            assert waited < 5  # well before any idle timeout: the PINGs kept it alive
            await trio.sleep(0.5)
            assert talker.terminated is None
            nursery.cancel_scope.cancel()
