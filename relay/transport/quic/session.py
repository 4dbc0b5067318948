"""moq sessions on a QUIC connection: the stream bookkeeping raw QUIC and WebTransport share
(BaseQuicSession) and moq directly on QUIC (RawQuicSession, the app of the moq ALPNs).

Receive-buffer policy: aioquic raises MAX_STREAM_DATA / MAX_DATA as data *arrives*, not as
the application reads it, so flow control does not bound memory. We bound it ourselves:
a stream whose unread buffer exceeds `stream_buffer_limit` is stopped (STOP_SENDING) and
its reader gets StreamReset; a connection whose unread total exceeds
`connection_buffer_limit` is closed with BUFFER_EXCEEDED_CODE (connection.py).
"""

from __future__ import annotations

import abc
import logging
from typing import Any

import trio

from relay.transport.accept import AcceptQueue
from relay.transport.base import RecvStream, SendStream, SessionClosed, SessionInfo, TransportSession
from relay.transport.quic.codes import BUFFER_EXCEEDED_CODE, STREAM_REFUSED_CODE, code_from_wire
from relay.transport.quic.connection import Connection
from relay.transport.quic.stream import QuicStream

log = logging.getLogger(__name__)

DATAGRAM_BACKLOG = 256  # unread received datagrams; beyond: newest dropped
UDP_PAYLOAD_LIMIT = 1200  # we never send larger QUIC packets (aioquic default)
DATAGRAM_OVERHEAD = 40  # short header + packet number + AEAD tag + DATAGRAM frame header


class BaseQuicSession(TransportSession):
    """Stream bookkeeping shared by raw QUIC and WebTransport sessions (the StreamOwner of
    its streams). Subclasses feed it what the peer did through the `peer_*` methods."""

    def __init__(self, conn: Connection, info: SessionInfo) -> None:
        self._conn = conn
        self.info = info
        backlog = conn.settings.accept_backlog
        self._accept_bi: AcceptQueue[QuicStream] = AcceptQueue(backlog)
        self._accept_uni: AcceptQueue[QuicStream] = AcceptQueue(backlog)
        self._dg_tx, self._dg_rx = trio.open_memory_channel[bytes](DATAGRAM_BACKLOG)
        self._streams: dict[int, QuicStream] = {}
        self._peer_max: dict[int, int] = {}  # per stream type (id & 3): highest peer id seen
        self._peer_gaps: set[int] = set()  # implicitly opened peer ids not seen yet
        self._closed: SessionClosed | None = None
        self._closed_event = trio.Event()

    # -- StreamOwner
    @property
    def closed(self) -> SessionClosed | None:
        return self._closed

    def unread_changed(self, delta: int) -> None:
        self._conn.count_unread(delta)

    def stream_finished(self, stream: QuicStream) -> None:
        self._streams.pop(stream.stream_id, None)

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

    def _deliver(self, s: QuicStream, data: bytes, fin: bool) -> None:
        s.on_data(data, fin)
        if s.unread > self._conn.settings.stream_buffer_limit:
            log.warning("conn=%d stream %d: receive buffer over limit, stopping it", self._conn.conn_id, s.stream_id)
            s.overflow(BUFFER_EXCEEDED_CODE)

    # -- what the peer did
    def peer_stream_data(self, sid: int, data: bytes, fin: bool) -> None:
        """Data on a peer-opened stream (a new one is queued for accept)."""
        s = self._streams.get(sid)
        if s is None:
            if self._closed is not None or not self._is_new_peer_stream(sid):
                return
            uni = bool(sid & 2)
            s = QuicStream(self, self._conn, sid, readable=True, writable=not uni)
            self._streams[sid] = s
            if not (self._accept_uni if uni else self._accept_bi).put(s):
                # Policy: the application is not accepting fast enough; refuse the newest.
                log.warning("conn=%d accept backlog full, refusing stream %d", self._conn.conn_id, sid)
                s.stop(STREAM_REFUSED_CODE)
                s.reset(STREAM_REFUSED_CODE)
                return
        self._deliver(s, data, fin)

    def own_stream_data(self, sid: int, data: bytes, fin: bool) -> None:
        """Data on a stream we opened; one we already forgot is ignored."""
        s = self._streams.get(sid)
        if s is not None:
            self._deliver(s, data, fin)

    def peer_stream_reset(self, sid: int, wire_code: int) -> None:
        s = self._streams.get(sid)
        if s is not None:
            s.on_reset(code_from_wire(wire_code))

    def peer_stop_sending(self, sid: int, wire_code: int) -> None:
        s = self._streams.get(sid)
        if s is not None:
            s.on_stop(code_from_wire(wire_code))

    def peer_datagram(self, data: bytes) -> None:
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
            s.on_session_closed()
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
            data = await self._dg_rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed or SessionClosed() from None
        self.info.bytes_in += len(data)
        return data

    async def _open(self, uni: bool) -> QuicStream:
        conn = self._conn
        while True:
            if self._closed is not None:
                raise self._closed
            if conn.can_open_stream(uni):
                break
            await conn.wait_flushed()  # woken on every received batch (MAX_STREAMS may be in it)
        sid = self._create_stream_id(uni)
        s = QuicStream(self, conn, sid, readable=not uni, writable=True)
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

    def _datagram_room(self) -> int:
        """The largest DATAGRAM frame payload the peer takes and our packets carry; 0: none."""
        remote = self._conn.engine.remote_max_datagram_frame_size(self._conn.quic)
        if remote <= 0:
            return 0
        return max(0, min(remote - 3, UDP_PAYLOAD_LIMIT - DATAGRAM_OVERHEAD))

    @abc.abstractmethod
    def _create_stream_id(self, uni: bool) -> int:
        """The next id for a stream we open (WebTransport also announces it to the peer)."""

    @abc.abstractmethod
    def _queue_datagram(self, data: bytes) -> None:
        """Hand one datagram to the engine, framed as this kind of session frames it."""

    def send_datagram(self, data: bytes) -> None:
        # Best effort by definition: too large, closed or refused by the engine, it is dropped.
        if self._closed is not None or not 0 < len(data) <= self.max_datagram_size:
            return
        try:
            self._queue_datagram(bytes(data))
        except Exception:
            return
        self.info.bytes_out += len(data)
        self._conn.wake()


class RawQuicSession(BaseQuicSession):
    """moq directly on QUIC: streams 1:1, datagrams unprefixed, close = CONNECTION_CLOSE.
    It is its connection's app (ConnectionApp) too."""

    @classmethod
    def for_connection(cls, conn: Connection) -> RawQuicSession:
        """The AppFactory of the moq ALPNs: the session is the app."""
        info = SessionInfo(transport="quic", protocol=conn.alpn or "", path=None, remote=conn.remote,
                           conn_id=conn.conn_id)
        return cls(conn, info)

    def _create_stream_id(self, uni: bool) -> int:
        quic = self._conn.quic
        sid = quic.get_next_available_stream_id(uni)
        quic.send_stream_data(sid, b"")  # makes the engine allocate the id now
        return sid

    # -- ConnectionApp
    def handshake_completed(self) -> None:
        self._conn.start_handler(self)

    def handle_event(self, event: Any) -> None:
        qe = self._conn.engine.qe
        if isinstance(event, qe.StreamDataReceived):
            self.peer_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, qe.StreamReset):
            self.peer_stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, qe.StopSendingReceived):
            self.peer_stop_sending(event.stream_id, event.error_code)
        elif isinstance(event, qe.DatagramFrameReceived):
            self.peer_datagram(event.data)

    def connection_terminated(self, error_code: int, reason: str) -> None:
        self._terminate(SessionClosed(error_code, reason))

    # -- TransportSession
    @property
    def max_datagram_size(self) -> int:
        return self._datagram_room()

    def _queue_datagram(self, data: bytes) -> None:
        self._conn.quic.send_datagram_frame(data)

    def close(self, code: int = 0, reason: str = "") -> None:
        if self._closed is not None:
            return
        self._conn.close_quic(code, reason)
        self._terminate(SessionClosed(code, reason))
