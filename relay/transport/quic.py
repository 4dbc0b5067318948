"""QUIC endpoint on trio: raw-QUIC moq sessions and (ALPN h3) WebTransport sessions.

Sans-IO design: the engine (aioquic or qh3, see engines.py) does all of QUIC; this module
moves datagrams between UDP sockets and engine connections, runs one timer per
connection, and adapts engine events to the TransportSession contract of base.py.

Task tree: endpoint nursery -> one socket reader + one socket writer per bound address,
and one task per connection; each connection task owns a nursery holding its driver
(timer / flush) task and the session handler, so cancelling a connection cancels all of it.

Receive-buffer policy: aioquic raises MAX_STREAM_DATA / MAX_DATA as data *arrives*, not as
the application reads it, so flow control does not bound memory. We bound it ourselves:
a stream whose unread buffer exceeds `stream_buffer_limit` is stopped (STOP_SENDING) and
its reader gets StreamReset; a connection whose unread total exceeds
`connection_buffer_limit` is closed with BUFFER_EXCEEDED_CODE.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from relay.tls import Identity
from relay.transport.accept import AcceptQueue
from relay.transport.base import (
    RecvStream,
    SendStream,
    SessionClosed,
    SessionInfo,
    StreamReset,
    TransportError,
    TransportSession,
    next_conn_id,
)
from relay.transport.engines import Engine, get_engine

if TYPE_CHECKING:
    from relay.transport.webtransport import WtDecision

log = logging.getLogger("relay.transport.quic")

Handler = Callable[[TransportSession], Awaitable[None]]

# --------------------------------------------------------------------------- error codes
# moq stream codes travel in the HTTP/3 WebTransport error range (moq-lite §6.2), also on raw QUIC.
WT_CODE_FIRST = 0x52E4A40FA8DB
WT_CODE_LAST = 0x52E5AC983162


def code_to_wire(code: int) -> int:
    """moq application code -> RESET_STREAM/STOP_SENDING wire code."""
    return WT_CODE_FIRST + code + code // 0x1E


def code_from_wire(wire: int) -> int | None:
    """Wire code -> moq code; None for codes outside the range (e.g. quinn's STOP_SENDING(0))."""
    if not WT_CODE_FIRST <= wire <= WT_CODE_LAST:
        return None
    d = wire - WT_CODE_FIRST
    if d % 0x1F == 0x1E:
        return None  # an HTTP/3 GREASE codepoint, not a mapped code
    return d - d // 0x1F


# Codes we choose ourselves (moq codes, see relay.protocol.lite.errors).
HANDLER_ERROR_CODE = 1  # Rust closes with 1 after an internal/transport failure
BUFFER_EXCEEDED_CODE = 11  # BOUNDS_EXCEEDED: a peer outran our receive buffers
STREAM_REFUSED_CODE = 11  # accept backlog full

SEND_HIGH_WATER = 1 << 20  # write() waits while a stream has more unsent bytes than this
RECV_BATCH = 64  # datagrams read per socket wake-up before flushing
SOCKET_BACKLOG = 4096  # datagrams queued when the kernel send buffer is full; beyond: dropped
# Generic segmentation offload (Linux >= 4.18): one sendmsg carries a run of equal-sized
# datagrams to one peer; the kernel splits them. Saves a syscall per datagram on fan-out bursts.
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64  # kernel limit (UDP_MAX_SEGMENTS)
GSO_MAX_BYTES = 65000  # one UDP payload's worth
DATAGRAM_BACKLOG = 256  # unread received datagrams; beyond: newest dropped
UDP_PAYLOAD_LIMIT = 1200  # we never send larger QUIC packets (aioquic default)
DATAGRAM_OVERHEAD = 40  # short header + packet number + AEAD tag + DATAGRAM frame header
QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
LOCAL_CID_LENGTH = 8  # engines' default connection_id_length; short headers carry this many bytes


def _fmt_addr(addr: Any) -> str:
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


# --------------------------------------------------------------------------- streams


class QuicStream(SendStream, RecvStream):
    """Both halves of one QUIC stream (raw or WebTransport; a uni stream uses one half)."""

    def __init__(self, session: BaseQuicSession, stream_id: int, *, readable: bool, writable: bool) -> None:
        self.stream_id = stream_id
        self._session = session
        self._conn = session._conn
        # receive half
        self._rbuf: deque[bytes] = deque()
        self._rsize = 0
        self._rfin = not readable
        self._rdone = not readable  # nothing more will ever be read
        self._rerr: TransportError | None = None
        self._rwake: trio.Event | None = None
        # send half
        self._sdone = not writable  # FIN queued, reset, or stopped by peer
        self._serr: TransportError | None = None

    # -- receive
    async def read(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._rbuf:
                chunk = self._rbuf[0]
                if len(chunk) <= max_bytes:
                    self._rbuf.popleft()
                else:
                    self._rbuf[0] = chunk[max_bytes:]
                    chunk = chunk[:max_bytes]
                self._rsize -= len(chunk)
                self._conn.rbuf_total -= len(chunk)
                if not self._rbuf and self._rfin:
                    self._rdone = True
                    self._session._maybe_forget(self)
                return chunk
            if self._rerr is not None:
                raise self._rerr
            if self._rfin:
                self._rdone = True
                self._session._maybe_forget(self)
                return b""
            if self._session._closed is not None:
                raise self._session._closed
            self._rwake = trio.Event()
            await self._rwake.wait()

    def stop(self, code: int = 0) -> None:
        if self._rdone:
            return
        self._rdone = True
        self._drop_rbuf()
        if self._rerr is None:
            self._rerr = StreamReset(None)  # our own stop: later reads fail
        if self._session._closed is None:
            try:
                self._conn.quic.stop_stream(self.stream_id, code_to_wire(code))
            except Exception:  # already finished/discarded in the engine: nothing to stop
                pass
            self._conn.wake()
        self._wake_reader()
        self._session._maybe_forget(self)

    def _drop_rbuf(self) -> None:
        self._conn.rbuf_total -= self._rsize
        self._rbuf.clear()
        self._rsize = 0

    def _wake_reader(self) -> None:
        if self._rwake is not None:
            self._rwake.set()
            self._rwake = None

    def _on_data(self, data: bytes, fin: bool) -> None:
        if self._rdone:
            return  # stopped by us; late data is discarded
        if data:
            self._rbuf.append(bytes(data))
            self._rsize += len(data)
            self._conn.rbuf_total += len(data)
        if fin:
            self._rfin = True
        self._wake_reader()
        if self._rsize > self._conn.ep.stream_buffer_limit:
            log.warning("conn=%d stream %d: receive buffer over limit, stopping it", self._conn.conn_id, self.stream_id)
            self.stop(BUFFER_EXCEEDED_CODE)
            self._rerr = StreamReset(BUFFER_EXCEEDED_CODE)

    def _on_reset(self, code: int | None) -> None:
        if self._rdone and self._rerr is not None:
            return
        if self._rfin:
            # FIN and all data already arrived: a reset after that changes nothing (the Rust
            # client resets finished TRACK/FETCH replies with code 1), so keep the data.
            return
        self._drop_rbuf()
        self._rerr = StreamReset(code)
        self._rdone = True
        self._wake_reader()
        self._session._maybe_forget(self)

    # -- send
    def _check_send(self) -> None:
        if self._serr is not None:
            raise self._serr
        if self._session._closed is not None:
            raise self._session._closed
        if self._sdone:
            raise TransportError(f"stream {self.stream_id} already finished or reset")

    async def write(self, data: bytes | memoryview) -> None:
        self._check_send()
        if not data:
            return
        conn = self._conn
        try:
            conn.quic.send_stream_data(self.stream_id, bytes(data))
        except Exception as e:  # engine says the stream is gone
            raise TransportError(f"stream {self.stream_id}: {e}") from e
        conn.wake()
        while conn.engine.unsent_bytes(conn.quic, self.stream_id) > SEND_HIGH_WATER:
            await conn.wait_flushed()
            self._check_send()

    async def finish(self) -> None:
        if self._sdone or self._session._closed is not None:
            return
        self._sdone = True
        try:
            self._conn.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        except Exception:
            pass
        self._conn.wake()
        self._session._maybe_forget(self)

    def reset(self, code: int = 0) -> None:
        if self._sdone or self._session._closed is not None:
            return
        self._sdone = True
        try:
            self._conn.quic.reset_stream(self.stream_id, code_to_wire(code))
        except Exception:
            pass
        self._conn.wake()
        self._session._maybe_forget(self)

    def _on_stop(self, code: int | None) -> None:
        # The engine resets the send half itself when STOP_SENDING arrives.
        self._serr = StreamReset(code)
        self._sdone = True
        self._conn.unpark_writers()
        self._session._maybe_forget(self)

    def set_priority(self, priority: int) -> None:
        self._conn.priorities[self.stream_id] = priority

    def _on_session_closed(self) -> None:
        self._wake_reader()


# --------------------------------------------------------------------------- sessions


class BaseQuicSession(TransportSession):
    """Stream bookkeeping shared by raw QUIC and WebTransport sessions."""

    def __init__(self, conn: Connection, info: SessionInfo) -> None:
        self._conn = conn
        self.info = info
        backlog = conn.ep.accept_backlog
        self._accept_bi: AcceptQueue[QuicStream] = AcceptQueue(backlog)
        self._accept_uni: AcceptQueue[QuicStream] = AcceptQueue(backlog)
        self._dg_tx, self._dg_rx = trio.open_memory_channel[bytes](DATAGRAM_BACKLOG)
        self._streams: dict[int, QuicStream] = {}
        self._peer_max: dict[int, int] = {}  # per stream type (id & 3): highest peer id seen
        self._peer_gaps: set[int] = set()  # implicitly opened peer ids not seen yet
        self._closed: SessionClosed | None = None
        self._closed_event = trio.Event()

    # -- stream table
    def _is_new_peer_stream(self, sid: int) -> bool:
        kind = sid & 3
        top = self._peer_max.get(kind, kind - 4)
        if sid > top:
            self._peer_gaps.update(range(top + 4, sid, 4))
            self._peer_max[kind] = sid
            return True
        if sid in self._peer_gaps:
            self._peer_gaps.discard(sid)
            return True
        return False  # a stream we already forgot: late frames are ignored

    def _maybe_forget(self, s: QuicStream) -> None:
        if s._rdone and s._sdone and not s._rbuf:
            self._streams.pop(s.stream_id, None)
            self._conn.priorities.pop(s.stream_id, None)

    def _peer_stream_data(self, sid: int, data: bytes, fin: bool) -> None:
        s = self._streams.get(sid)
        if s is None:
            if self._closed is not None or not self._is_new_peer_stream(sid):
                return
            uni = bool(sid & 2)
            s = QuicStream(self, sid, readable=True, writable=not uni)
            self._streams[sid] = s
            if not (self._accept_uni if uni else self._accept_bi).put(s):
                # Policy: the application is not accepting fast enough; refuse the newest.
                log.warning("conn=%d accept backlog full, refusing stream %d", self._conn.conn_id, sid)
                s.stop(STREAM_REFUSED_CODE)
                s.reset(STREAM_REFUSED_CODE)
                return
        s._on_data(data, fin)

    def _peer_stream_reset(self, sid: int, wire_code: int) -> None:
        s = self._streams.get(sid)
        if s is not None:
            s._on_reset(code_from_wire(wire_code))

    def _peer_stop_sending(self, sid: int, wire_code: int) -> None:
        s = self._streams.get(sid)
        if s is not None:
            s._on_stop(code_from_wire(wire_code))

    def _peer_datagram(self, data: bytes) -> None:
        if self._closed is not None:
            return
        try:
            self._dg_tx.send_nowait(bytes(data))
        except trio.WouldBlock:
            pass  # datagrams are lossy by contract: drop the newest when nobody reads

    def _terminate(self, exc: SessionClosed) -> None:
        if self._closed is not None:
            return
        self._closed = exc
        self._accept_bi.close(exc)
        self._accept_uni.close(exc)
        self._dg_tx.close()
        for s in list(self._streams.values()):
            s._on_session_closed()
        self._conn.unpark_writers()
        self._closed_event.set()

    # -- TransportSession
    async def accept_bi(self) -> tuple[SendStream, RecvStream]:
        s = await self._accept_bi.get()
        return s, s

    async def accept_uni(self) -> RecvStream:
        return await self._accept_uni.get()

    async def recv_datagram(self) -> bytes:
        try:
            return await self._dg_rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed or SessionClosed() from None

    async def _open(self, uni: bool) -> QuicStream:
        conn = self._conn
        while True:
            if self._closed is not None:
                raise self._closed
            if conn.engine.can_open_stream(conn.quic, uni):
                break
            await conn.wait_flushed()  # woken on every received batch (MAX_STREAMS may be in it)
        sid = self._create_stream_id(uni)
        s = QuicStream(self, sid, readable=not uni, writable=True)
        self._streams[sid] = s
        conn.wake()
        return s

    async def open_bi(self) -> tuple[SendStream, RecvStream]:
        s = await self._open(False)
        return s, s

    async def open_uni(self) -> SendStream:
        return await self._open(True)

    async def wait_closed(self) -> SessionClosed:
        await self._closed_event.wait()
        assert self._closed is not None
        return self._closed

    @abc.abstractmethod
    def _create_stream_id(self, uni: bool) -> int:
        """The next id for a stream we open (WebTransport also announces it to the peer)."""

    @abc.abstractmethod
    def _on_connection_terminated(self, error_code: int, reason: str) -> None:
        """The QUIC connection is gone: fail every stream and mark the session closed."""


class RawQuicSession(BaseQuicSession):
    """moq directly on QUIC: streams 1:1, datagrams unprefixed, close = CONNECTION_CLOSE."""

    def _create_stream_id(self, uni: bool) -> int:
        quic = self._conn.quic
        sid = quic.get_next_available_stream_id(uni)
        quic.send_stream_data(sid, b"")  # makes the engine allocate the id now
        return sid

    def _handle_quic_event(self, ev: Any) -> None:
        qe = self._conn.engine.qe
        if isinstance(ev, qe.StreamDataReceived):
            self._peer_stream_data(ev.stream_id, ev.data, ev.end_stream)
        elif isinstance(ev, qe.StreamReset):
            self._peer_stream_reset(ev.stream_id, ev.error_code)
        elif isinstance(ev, qe.StopSendingReceived):
            self._peer_stop_sending(ev.stream_id, ev.error_code)
        elif isinstance(ev, qe.DatagramFrameReceived):
            self._peer_datagram(ev.data)

    @property
    def max_datagram_size(self) -> int:
        remote = self._conn.engine.remote_max_datagram_frame_size(self._conn.quic)
        if remote <= 0:
            return 0
        return max(0, min(remote - 3, UDP_PAYLOAD_LIMIT - DATAGRAM_OVERHEAD))

    def send_datagram(self, data: bytes) -> None:
        if self._closed is not None or not 0 < len(data) <= self.max_datagram_size:
            return
        try:
            self._conn.quic.send_datagram_frame(bytes(data))
        except Exception:
            return
        self._conn.wake()

    def close(self, code: int = 0, reason: str = "") -> None:
        if self._closed is not None:
            return
        self._conn.close_quic(code, reason)
        self._terminate(SessionClosed(code, reason))

    def _on_connection_terminated(self, error_code: int, reason: str) -> None:
        self._terminate(SessionClosed(error_code, reason))


# --------------------------------------------------------------------------- connection


class Connection:
    """One QUIC connection: engine state, its CIDs, its driver task and its session."""

    def __init__(self, ep: QuicEndpoint, sock: _UdpSocket, quic: Any, addr: Any, engine: Engine | None = None) -> None:
        self.ep = ep
        self.engine: Engine = engine or ep.engine
        self.sock = sock
        self.quic = quic
        self.addr = addr
        self.conn_id = next_conn_id()
        self.cids: set[bytes] = set()
        self.alpn: str | None = None
        self.session: BaseQuicSession | None = None
        self.app: Any = None  # RawQuicSession or webtransport.WtProtocol: receives engine events
        self.priorities: dict[int, int] = {}
        self.rbuf_total = 0
        self.terminated = False
        self._nursery: trio.Nursery | None = None
        self._pending_spawn: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = []
        self._wake_event = trio.Event()
        self._flushed = trio.lowlevel.ParkingLot()
        self._last_rx = trio.current_time()
        self._ping_uid = 0
        self._handler_started = False
        self.handler: Handler | None = None  # outbound dials bring their own session handler

    # -- called by the endpoint's socket reader (synchronous, batched)
    def receive(self, data: bytes, addr: Any, now: float) -> None:
        if self.terminated:
            return
        self._last_rx = now
        try:
            self.quic.receive_datagram(data, addr, now)
        except Exception:
            log.exception("conn=%d engine failed on a datagram; closing", self.conn_id)
            self._fail()

    def after_batch(self) -> None:
        self.process_events()
        self.transmit()
        self.wake()  # the timer deadline may have moved

    # -- event processing
    def process_events(self) -> None:
        qe = self.engine.qe
        while not self.terminated:
            ev = self.quic.next_event()
            if ev is None:
                break
            try:
                if isinstance(ev, qe.ConnectionIdIssued):
                    self.ep._add_cid(ev.connection_id, self)
                elif isinstance(ev, qe.ConnectionIdRetired):
                    self.ep._remove_cid(ev.connection_id, self)
                elif isinstance(ev, qe.ProtocolNegotiated):
                    self._on_alpn(ev.alpn_protocol)
                elif isinstance(ev, qe.HandshakeCompleted):
                    if self.alpn is None:
                        self._on_alpn(ev.alpn_protocol)
                    if isinstance(self.app, RawQuicSession):
                        self.start_handler(self.app)
                elif isinstance(ev, qe.ConnectionTerminated):
                    self._on_terminated(ev.error_code, ev.reason_phrase or "")
                elif self.app is not None:
                    self.app._handle_quic_event(ev)
            except Exception:
                # Peer misbehaviour or our bug: confine it to this connection.
                log.exception("conn=%d failed handling %s; closing", self.conn_id, type(ev).__name__)
                self._fail()
        if not self.terminated and self.rbuf_total > self.ep.connection_buffer_limit:
            log.warning("conn=%d receive buffers over limit; closing", self.conn_id)
            if self.session is not None:
                self.session.close(BUFFER_EXCEEDED_CODE, "receive buffer limit")
            else:
                self.close_quic(BUFFER_EXCEEDED_CODE, "receive buffer limit")

    def _on_alpn(self, alpn: str | None) -> None:
        if self.app is not None:
            return
        self.alpn = alpn
        if alpn == "h3":
            from relay.transport.webtransport import WtProtocol

            self.app = WtProtocol(self, self.ep.wt_select)
        else:
            info = SessionInfo(
                transport="quic",
                protocol=alpn or "",
                path=None,
                remote=_fmt_addr(self.addr),
                conn_id=self.conn_id,
            )
            self.app = self.session = RawQuicSession(self, info)

    def _on_terminated(self, error_code: int, reason: str) -> None:
        if self.terminated:
            return
        self.terminated = True
        log.debug("conn=%d terminated (code %#x: %s)", self.conn_id, error_code, reason)
        if self.session is not None:
            self.session._on_connection_terminated(error_code, reason)
        elif self.app is not None and hasattr(self.app, "_on_connection_terminated"):
            self.app._on_connection_terminated(error_code, reason)
        self.ep._forget(self)
        self.unpark_writers()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _fail(self) -> None:
        try:
            self.quic.close(error_code=0x1, reason_phrase="internal error")  # INTERNAL_ERROR
        except Exception:
            self._on_terminated(0x1, "internal error")

    def close_quic(self, code: int, reason: str = "") -> None:
        """Application close of the whole connection (CONNECTION_CLOSE, then draining)."""
        if self.terminated:
            return
        try:
            self.quic.close(error_code=code, reason_phrase=reason)
        except Exception:
            self._on_terminated(code, reason)
            return
        self.wake()

    # -- sending
    def transmit(self) -> None:
        if self.terminated:
            return
        if self.priorities:
            self.engine.apply_priorities(self.quic, self.priorities)
        try:
            datagrams = self.quic.datagrams_to_send(trio.current_time())
        except Exception:
            log.exception("conn=%d engine failed while sending; dropping connection", self.conn_id)
            self._on_terminated(0x1, "internal error")
            return
        if datagrams:
            self.sock.send_batch(datagrams)
        self.unpark_writers()

    def unpark_writers(self) -> None:
        self._flushed.unpark_all()

    async def wait_flushed(self) -> None:
        await self._flushed.park()

    def wake(self) -> None:
        """Ask the driver task to flush soon (coalesces writes of the current tick)."""
        self._wake_event.set()

    # -- tasks
    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            self._pending_spawn.append((fn, args))
        else:
            self._nursery.start_soon(fn, *args)

    def start_handler(self, session: BaseQuicSession) -> None:
        if self._handler_started:
            return
        self._handler_started = True
        self.session = session
        self.spawn(self._run_handler, session)

    async def _run_handler(self, session: BaseQuicSession) -> None:
        try:
            await (self.handler or self.ep.handler)(session)
        except* Exception:
            # Failures stay in this connection, also when they arrive grouped with a Cancelled
            # (the relay shutting down): that part propagates, the rest is logged here.
            log.exception("conn=%d session handler failed", self.conn_id)
            session.close(HANDLER_ERROR_CODE, "internal error")
        else:
            session.close(0, "")

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for fn, args in self._pending_spawn:
                    nursery.start_soon(fn, *args)
                self._pending_spawn.clear()
                if self.terminated:
                    nursery.cancel_scope.cancel()
                await self._drive()
        finally:
            if not self.terminated:
                # Cancelled from outside (endpoint shutting down): tell the peer, best effort.
                try:
                    self.quic.close(error_code=0, reason_phrase="shutdown")
                    self.transmit()
                except Exception:
                    pass
                self._on_terminated(0, "shutdown")

    async def _drive(self) -> None:
        """Timer, keep-alive and write coalescing for this connection."""
        keep_alive = self.ep.keep_alive
        while not self.terminated:
            timer = self.quic.get_timer()
            deadline = math.inf if timer is None else timer
            if keep_alive:
                deadline = min(deadline, self._last_rx + keep_alive)
            if self._wake_event.is_set():
                # Woken while flushing (the common case under load): no cancel scope needed.
                await trio.lowlevel.checkpoint()
            else:
                with trio.move_on_at(deadline):
                    await self._wake_event.wait()
            self._wake_event = trio.Event()
            now = trio.current_time()
            if timer is not None and now >= timer:
                try:
                    self.quic.handle_timer(now)
                except Exception:
                    log.exception("conn=%d engine timer failed", self.conn_id)
                    self._on_terminated(0x1, "internal error")
                    return
                self.process_events()
            if keep_alive and now >= self._last_rx + keep_alive and not self.terminated:
                self._ping_uid += 1
                try:
                    self.quic.send_ping(self._ping_uid)
                except Exception:
                    pass
                self._last_rx = now  # one PING per idle period
            self.transmit()


# --------------------------------------------------------------------------- sockets


class _UdpSocket:
    """One bound UDP socket: batched non-blocking reads, sends with a small overflow queue."""

    def __init__(self, ep: QuicEndpoint, host: str, port: int) -> None:
        self.ep = ep
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Separate v4 and v6 sockets may share a port number.
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)  # media bursts
                except OSError:
                    pass
            s.bind((host.strip("[]"), port))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.address: tuple[str, int] = s.getsockname()[:2]
        self._backlog: deque[tuple[bytes, Any]] = deque()
        self._want_write = trio.Event()
        self.gso = ep.gso and _probe_gso(s)
        self.stats = {"sendmsg_gso": 0, "datagrams_gso": 0}
        self.largest_sent = 0  # bytes of the largest UDP payload sent (max_datagram_size at work)

    def send_batch(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send one connection's flush: runs of equal-sized datagrams go out as one GSO send."""
        if not self.gso or len(datagrams) < 2 or self._backlog:
            for data, addr in datagrams:
                self.send(data, addr)
            return
        i, n = 0, len(datagrams)
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            j = i + 1
            total = size
            # The run: same peer, same size; one shorter datagram may end it.
            while j < n and j - i < GSO_MAX_SEGMENTS and datagrams[j][1] == addr:
                nxt = len(datagrams[j][0])
                if nxt > size or total + nxt > GSO_MAX_BYTES:
                    break
                total += nxt
                j += 1
                if nxt < size:
                    break
            if j - i == 1:
                self.send(data, addr)
            elif not self._send_gso([d for d, _ in datagrams[i:j]], size, addr):
                for k in range(i, j):
                    self.send(*datagrams[k])
            i = j

    def _send_gso(self, segments: list[bytes], size: int, addr: Any) -> bool:
        """True when sent or queued; False when GSO failed and the caller should send singly."""
        if self._backlog:
            return False
        try:
            self.sock.sendmsg([b"".join(segments)], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                              0, addr)
        except BlockingIOError:
            return False  # send() queues them one by one
        except OSError as e:
            # EIO/EINVAL: the route's device cannot segment (no checksum offload); stop trying.
            log.info("UDP GSO send failed (%s); falling back to one datagram per send", e)
            self.gso = False
            return False
        self.stats["sendmsg_gso"] += 1
        self.stats["datagrams_gso"] += len(segments)
        if size > self.largest_sent:
            self.largest_sent = size
        return True

    def send(self, data: bytes, addr: Any) -> None:
        if len(data) > self.largest_sent:
            self.largest_sent = len(data)
        if self._backlog:
            if len(self._backlog) < SOCKET_BACKLOG:
                self._backlog.append((data, addr))
            return  # full: drop; QUIC loss recovery resends
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self._backlog.append((data, addr))
            self._want_write.set()
        except OSError as e:
            log.debug("sendto %s failed: %s", _fmt_addr(addr), e)

    async def writer(self) -> None:
        while True:
            await self._want_write.wait()
            self._want_write = trio.Event()
            while self._backlog:
                await trio.lowlevel.wait_writable(self.sock)
                while self._backlog:
                    data, addr = self._backlog[0]
                    try:
                        self.sock.sendto(data, addr)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        log.debug("sendto %s failed: %s", _fmt_addr(addr), e)
                    self._backlog.popleft()

    async def reader(self) -> None:
        sock = self.sock
        ep = self.ep
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            touched: dict[Connection, None] = {}
            for _ in range(RECV_BATCH):
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError as e:  # e.g. ICMP unreachable surfaced on the socket
                    log.debug("recvfrom: %s", e)
                    continue
                conn = ep._route(data, addr, self)
                if conn is not None:
                    conn.receive(data, addr, now)
                    touched[conn] = None
            for conn in touched:
                conn.after_batch()
            # Let the connections' tasks run before the next batch even under a flood.
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self.sock.close()


def _probe_gso(sock: socket.socket) -> bool:
    if not hasattr(sock, "sendmsg"):
        return False
    try:
        sock.getsockopt(socket.SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- endpoint


class QuicEndpoint:
    """A UDP endpoint accepting raw-QUIC (moq ALPNs) and WebTransport (ALPN h3) sessions."""

    def __init__(
        self,
        binds: list[tuple[str, int]],
        identity: Identity,
        alpns: list[str],
        handler: Handler,
        *,
        wt_select: Callable[[str, list[str], dict[str, str]], WtDecision] | None = None,
        max_streams: int = 10000,
        idle_timeout: float = 30.0,
        keep_alive: float | None = None,
        max_datagram_frame_size: int | None = 65536,
        engine: str = "aioquic",
        max_connections: int = 10000,
        stream_buffer_limit: int = 8 << 20,
        connection_buffer_limit: int = 64 << 20,
        accept_backlog: int = 1024,
        max_data: int = 16 << 20,
        max_stream_data: int = 4 << 20,
        gso: bool = True,
        max_datagram_size: int | None = None,
    ) -> None:
        self.binds = list(binds)
        self.identity = identity
        self.alpns = list(alpns)
        self.handler = handler
        self.wt_select = wt_select
        self.max_streams = max_streams
        self.keep_alive = keep_alive
        self.max_connections = max_connections
        self.stream_buffer_limit = stream_buffer_limit
        self.connection_buffer_limit = connection_buffer_limit
        self.accept_backlog = accept_backlog
        self.gso = gso
        self.engine = get_engine(engine)
        self._config_args = {"idle_timeout": idle_timeout, "max_datagram_frame_size": max_datagram_frame_size,
                             "max_data": max_data, "max_stream_data": max_stream_data,
                             "max_datagram_size": max_datagram_size}
        self.configuration = self.engine.server_configuration(identity, self.alpns, **self._config_args)
        self._supported_versions = set(self.configuration.supported_versions)
        # aioquic, for the clients our engine cannot serve (see Engine.serves_empty_client_cid).
        self._fallback: tuple[Engine, Any] | None = None
        self._sockets: list[_UdpSocket] = []
        self._cids: dict[bytes, Connection] = {}
        self._conns: set[Connection] = set()
        self._nursery: trio.Nursery | None = None
        self.stats = {"dropped": 0, "dropped_short_initial": 0, "refused_max_connections": 0,
                      "fallback_engine": 0}

    def set_identity(self, identity: Identity) -> None:
        """Serve new connections with another certificate (existing ones keep theirs)."""
        self.identity = identity
        self.configuration = self.engine.server_configuration(identity, self.alpns, **self._config_args)
        self._fallback = None

    def _server_engine(self, client_scid: bytes) -> tuple[Engine, Any]:
        """The engine and configuration for a new connection whose client Initial carried
        `client_scid`: ours, or aioquic where ours cannot serve that client."""
        if client_scid or self.engine.serves_empty_client_cid:
            return self.engine, self.configuration
        if self._fallback is None:
            fallback = get_engine("aioquic")
            self._fallback = fallback, fallback.server_configuration(self.identity, self.alpns, **self._config_args)
            if not self.stats["fallback_engine"]:
                log.info("%s cannot serve clients without a connection ID (Chromium-based browsers): "
                         "aioquic serves them", self.engine.name)
        return self._fallback

    @contextlib.asynccontextmanager
    async def dial(self, host: str, port: int, alpns: list[str], handler: Handler, *,
                   server_name: str | None = None, verify: bool = True, cafile: str | None = None,
                   timeout: float = 10.0) -> AsyncIterator[Connection]:
        """An outbound raw-QUIC connection from one of our own sockets (cluster links).

        `handler` runs the session once the handshake completes, inside the connection's task
        tree, which lives exactly as long as this context: leaving it closes the connection."""
        import ssl

        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        sock = addr = None
        for family, _, _, _, sockaddr in infos:
            for candidate in self._sockets:
                if candidate.sock.family == family:
                    sock = candidate
                    addr = sockaddr if family == socket.AF_INET else sockaddr[:2]
                    break
            if sock is not None:
                break
        if sock is None or addr is None:
            raise OSError(f"no local socket can reach {host}:{port}")
        cfg = self.engine.client_configuration(alpns)
        cfg.server_name = server_name or host
        cfg.idle_timeout = self.configuration.idle_timeout
        cfg.max_datagram_size = self.configuration.max_datagram_size
        if verify:
            cfg.verify_mode = ssl.CERT_REQUIRED
            if cafile:
                cfg.load_verify_locations(cafile)
        quic = self.engine.QuicConnection(configuration=cfg)
        self.engine.set_local_max_streams(quic, self.max_streams)
        conn = Connection(self, sock, quic, addr)
        conn.handler = handler
        self._conns.add(conn)
        self._add_cid(quic.host_cid, conn)
        quic.connect(addr, trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run)
                conn.transmit()
                with trio.fail_after(timeout):
                    while conn.session is None or not conn._handler_started:
                        if conn.terminated:
                            raise ConnectionError(f"connection to {host}:{port} closed during the handshake")
                        await trio.sleep(0.01)
                yield conn
                nursery.cancel_scope.cancel()
        finally:
            if not conn.terminated:
                conn.close_quic(0, "link closed")
                conn.transmit()
            self._forget(conn)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self._sockets]

    @property
    def connections(self) -> list[Connection]:
        return list(self._conns)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            for host, port in self.binds:
                self._sockets.append(_UdpSocket(self, host, port))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for s in self._sockets:
                    nursery.start_soon(s.reader)
                    nursery.start_soon(s.writer)
                log.info("QUIC endpoint (%s) on %s", self.engine.name, ", ".join(_fmt_addr(a) for a in self.addresses))
                task_status.started()
        finally:
            for s in self._sockets:
                s.close()

    # -- routing
    def _add_cid(self, cid: bytes, conn: Connection) -> None:
        self._cids[cid] = conn
        conn.cids.add(cid)

    def _remove_cid(self, cid: bytes, conn: Connection) -> None:
        if self._cids.get(cid) is conn:
            del self._cids[cid]
        conn.cids.discard(cid)

    def _forget(self, conn: Connection) -> None:
        for cid in list(conn.cids):
            self._remove_cid(cid, conn)
        self._conns.discard(conn)

    def _route(self, data: bytes, addr: Any, sock: _UdpSocket) -> Connection | None:
        if not data:
            return None
        first = data[0]
        if not first & 0x80:
            conn = self._cids.get(data[1 : 1 + LOCAL_CID_LENGTH])
            if conn is None:
                self.stats["dropped"] += 1
            return conn
        if len(data) < 7:
            self.stats["dropped"] += 1
            return None
        dcid_len = data[5]
        if dcid_len > 20 or len(data) < 6 + dcid_len:
            self.stats["dropped"] += 1
            return None
        dcid = data[6 : 6 + dcid_len]
        conn = self._cids.get(dcid)
        if conn is not None:
            return conn
        version = int.from_bytes(data[1:5], "big")
        ptype = (first & 0x30) >> 4
        is_initial = (version == QUIC_V1 and ptype == 0) or (version == QUIC_V2 and ptype == 1)
        # Unknown versions are dropped (no Version Negotiation); moq clients use v1.
        if not is_initial or version not in self._supported_versions or dcid_len < 8:
            self.stats["dropped"] += 1
            return None
        scid_at = 6 + dcid_len  # the source connection ID's length byte, then the ID
        if len(data) <= scid_at or data[scid_at] > 20:
            self.stats["dropped"] += 1
            return None
        scid = data[scid_at + 1 : scid_at + 1 + data[scid_at]]
        if len(data) < 1200:
            # RFC 9000 §14.1: a client Initial is padded to 1200 bytes; smaller ones are not
            # worth a connection (and would be an amplification vector).
            self.stats["dropped_short_initial"] += 1
            return None
        if len(self._conns) >= self.max_connections or self._nursery is None:
            self.stats["refused_max_connections"] += 1
            return None
        engine, configuration = self._server_engine(scid)
        try:
            quic = engine.new_server_connection(configuration, dcid)
            engine.set_local_max_streams(quic, self.max_streams)
        except Exception:
            log.exception("cannot create a connection for %s", _fmt_addr(addr))
            return None
        conn = Connection(self, sock, quic, addr, engine)
        self._conns.add(conn)
        self._add_cid(dcid, conn)
        self._add_cid(quic.host_cid, conn)
        if engine is self.engine:
            log.debug("conn=%d new connection from %s", conn.conn_id, _fmt_addr(addr))
        else:
            self.stats["fallback_engine"] += 1
            log.debug("conn=%d new connection from %s, served by %s: the client has no connection ID",
                      conn.conn_id, _fmt_addr(addr), engine.name)
        self._nursery.start_soon(conn.run)
        return conn
