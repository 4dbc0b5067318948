"""The WebSocket fallback: a moq-lite session carried in WebSocket messages (lite §8.3).

Two wires, both sans-IO behind one `StreamMux` interface: QMux (`qmux.QmuxConnection`, the
`qmux-0N[.alpn]` subprotocols) and the older `webtransport` polyfill wire of the seed-era
JavaScript client (`polyfill.PolyfillConnection`). `WebSocketSession` is an ordinary
TransportSession, so the session code cannot tell it from QUIC. `run()` pumps messages between
the WebSocket and the mux; the relay runs it next to the session handler in one nursery, owned
by the WebSocket request.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from relay.transport import polyfill, qmux
from relay.transport.base import (
    RecvStream,
    SendStream,
    SessionClosed,
    SessionInfo,
    StreamReset,
    TransportError,
    TransportSession,
)
from relay.transport.chunks import ChunkQueue

log = logging.getLogger("relay.websocket")

SEND_HIGH_WATER = 1 << 20  # a writer waits while its stream holds this much unsent data
STREAM_RECV_LIMIT = 40 << 20  # unread bytes on one stream (> the 32 MiB frame cap)
SESSION_RECV_LIMIT = 64 << 20
ACCEPT_BACKLOG = 1024
# The largest WebSocket message the HTTP server assembles: the seed-era polyfill wire sends a
# stream write as one message (QMux records are capped at 1 MiB by the mux itself).
MAX_MESSAGE = polyfill.MAX_INCOMING_MESSAGE
FLUSH_TIMEOUT = 2.0  # for the last messages (a close frame) once the session is over
# Outgoing messages the writer holds for a slow peer: above this the reader stops taking the
# peer's messages (TCP pushes back on it) until the writer is under the low-water mark again;
# a peer that takes nothing for STALL_TIMEOUT meanwhile is closed. A peer that sends nothing
# either leaves the reader waiting for a message, and hypercorn's writes cannot be cancelled:
# the HTTP server aborts a connection whose writes make no progress for STALL_TIMEOUT
# (relay/web/serve.py), which ends this session too.
OUTGOING_HIGH_WATER = 4 << 20
OUTGOING_LOW_WATER = 1 << 20
STALL_TIMEOUT = 20.0
# Messages a peer may send per second (a burst of as many): past it the reader waits, so a flood
# of small messages costs the relay a bounded share of its one thread. A 16 KiB QMux record per
# message is 650 Mbit/s at this rate.
MESSAGE_RATE = 5000.0

# Server preference: for each of our ALPNs qmux-01 then qmux-00 (as HEAD's relay), then the
# bare wire versions meaning "no app protocol": the legacy in-band SETUP; the flow-controlled
# QMux before the `webtransport` polyfill wire, which only the seed-era JS client offers alone.
QMUX_PREFIXES = ["qmux-01", "qmux-00", "qmux-02"]
BARE = ["qmux-02", "qmux-01", "qmux-00"]


def select_subprotocol(offered: list[str], alpns: list[str], legacy: bool) -> tuple[str | None, str | None, int]:
    """(subprotocol to echo, moq ALPN or "" for legacy SETUP, HTTP status).

    Nothing offered: 400 (not a MoQ client we know)."""
    offered_set = {o.strip() for o in offered}
    for alpn in alpns:
        for prefix in QMUX_PREFIXES:
            name = f"{prefix}.{alpn}"
            if name in offered_set:
                return name, alpn, 200
    if legacy:
        for bare in BARE:
            if bare in offered_set or f"{bare}.moql" in offered_set:
                return (bare if bare in offered_set else f"{bare}.moql"), "", 200
        if polyfill.SUBPROTOCOL in offered_set:
            return polyfill.SUBPROTOCOL, "", 200
    return None, None, 400


class StreamMux(Protocol):
    """A sans-IO stream multiplexer over WebSocket messages: what the driver needs of a wire.

    Methods that digest peer bytes raise `qmux.QmuxError` (the polyfill's error is one)."""

    closed: bool
    # Seconds without a message either way after which the session is dead; None: the wire
    # has no keep-alive, so quiet is healthy (WebSocket pings and TCP tell a dead peer).
    idle_timeout: float | None

    def is_local(self, sid: int) -> bool: ...

    def can_open(self, uni: bool) -> bool: ...

    def open_stream(self, uni: bool) -> int: ...

    def receive_message(self, data: bytes) -> None: ...

    def events(self) -> Sequence[qmux.StreamData | qmux.StreamReset | qmux.StopSending | qmux.ConnectionClosed]: ...

    def consumed(self, sid: int, n: int, fin_read: bool = False) -> None: ...

    def send_stream_data(self, sid: int, data: bytes, fin: bool = False) -> None: ...

    def pending(self, sid: int) -> int: ...

    def reset_stream(self, sid: int, code: int) -> None: ...

    def stop_sending(self, sid: int, code: int) -> None: ...

    def close(self, code: int, reason: str = "") -> None: ...

    def messages_to_send(self) -> list[bytes]: ...


def mux_for(subprotocol: str | None) -> StreamMux:
    """The wire a negotiated subprotocol selects: `webtransport` = the polyfill, else QMux."""
    if subprotocol == polyfill.SUBPROTOCOL:
        return polyfill.PolyfillConnection(is_server=True)
    return qmux.QmuxConnection(is_server=True)


class MessageChannel(Protocol):
    """What the driver needs of a WebSocket: binary messages in and out, and a close."""

    async def receive(self) -> bytes | str: ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class _Stream(SendStream, RecvStream):
    def __init__(self, session: WebSocketSession, sid: int) -> None:
        self.session = session
        self.stream_id = sid
        self.buf = ChunkQueue()
        self.fin = False
        self.error: TransportError | None = None
        self.stopped: int | None = None
        self.send_done = False
        self.changed = trio.Event()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # receive half
    async def read(self, max_bytes: int = 65536) -> bytes:
        s = self.session
        while True:
            if self.buf:
                chunk = self.buf.take(max_bytes)
                s.unread -= len(chunk)
                s.info.bytes_in += len(chunk)
                s.conn.consumed(self.stream_id, len(chunk), fin_read=self.fin and not self.buf)
                s.kick()
                return chunk
            if self.error is not None:
                raise self.error
            if self.fin:
                return b""
            if s.closed is not None:
                raise s.closed
            await self.changed.wait()

    def stop(self, code: int = 0) -> None:
        if self.fin or self.error is not None or self.session.closed is not None:
            return
        self.session.unread -= self.buf.clear()
        self.error = StreamReset(None)
        self.session.conn.stop_sending(self.stream_id, code)
        self.session.kick()

    # send half
    async def write(self, data: bytes | memoryview) -> None:
        s = self.session
        self._check()
        if self.send_done:
            raise TransportError(f"stream {self.stream_id} already finished")
        s.conn.send_stream_data(self.stream_id, bytes(data))
        s.info.bytes_out += len(data)
        s.kick()
        while s.conn.pending(self.stream_id) > SEND_HIGH_WATER:
            await s.progress.wait()
            self._check()

    def _check(self) -> None:
        if self.session.closed is not None:
            raise self.session.closed
        if self.stopped is not None:
            raise StreamReset(self.stopped)

    async def finish(self) -> None:
        if self.send_done or self.session.closed is not None:
            return
        self.send_done = True
        self.session.conn.send_stream_data(self.stream_id, b"", True)
        self.session.kick()
        await trio.lowlevel.checkpoint()

    def reset(self, code: int = 0) -> None:
        if self.send_done or self.session.closed is not None:
            return
        self.send_done = True
        self.session.conn.reset_stream(self.stream_id, code)
        self.session.kick()

    def set_priority(self, priority: int) -> None:
        pass  # one TCP stream: order is arrival order


class WebSocketSession(TransportSession):
    def __init__(self, channel: MessageChannel, info: SessionInfo, mux: StreamMux | None = None) -> None:
        self.channel = channel
        self.info = info
        self.conn: StreamMux = mux if mux is not None else qmux.QmuxConnection(is_server=True)
        self.streams: dict[int, _Stream] = {}
        self.closed: SessionClosed | None = None
        self._closed_event = trio.Event()
        self._accept_bi: collections.deque[_Stream] = collections.deque()
        self._accept_uni: collections.deque[_Stream] = collections.deque()
        self._arrived = trio.Event()
        self._kick = trio.Event()
        self.progress = trio.Event()
        self._last_activity = trio.current_time()
        self.unread = 0
        self._credit = trio.Event()
        self._writer_done = trio.Event()
        self.unsent = 0  # bytes of messages taken from the mux and not yet sent
        self._sent: trio.Event | None = None  # set by the writer when the reader waits for it

    # -- the pump -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Move messages until either side closes; then everything of this session fails."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                await self._reader()
                if self.closed is not None:
                    # Closed by either side's close frame, or by us for a peer error: the writer
                    # still sends what it holds (our close frame with its code, at least).
                    with trio.move_on_after(FLUSH_TIMEOUT):
                        await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._terminate(SessionClosed(0, "websocket closed"))

    async def _reader(self) -> None:
        idle_timeout = self.conn.idle_timeout
        bucket = TokenBucket(MESSAGE_RATE, MESSAGE_RATE)
        while self.closed is None:
            await bucket.take()
            # Idle means nothing moved either way: @moq/lite sends nothing while it only
            # receives (no keep-alives), and a peer we keep writing to is not idle.
            deadline = math.inf if idle_timeout is None else self._last_activity + idle_timeout
            with trio.move_on_at(deadline) as idle:
                try:
                    message = await self.channel.receive()
                except Exception as exc:  # the WebSocket is gone (close frame or TCP reset)
                    log.debug("conn=%s websocket ended: %s", self.info.conn_id, exc)
                    return
            if idle.cancelled_caught:
                assert idle_timeout is not None
                if trio.current_time() < self._last_activity + idle_timeout:
                    continue
                log.info("conn=%s websocket idle for %.0fs; closing", self.info.conn_id, idle_timeout)
                self._fail(0x1, "idle timeout")
                return
            self._last_activity = trio.current_time()
            if isinstance(message, str):
                self._fail(qmux.PROTOCOL_VIOLATION, "text message")
                return
            try:
                self.conn.receive_message(message)
            except qmux.QmuxError as exc:
                log.warning("conn=%s qmux error from peer: %s", self.info.conn_id, exc.reason)
                self._fail(exc.code, exc.reason)
                return
            self._dispatch()
            if self.unread > SESSION_RECV_LIMIT:
                log.warning("conn=%s peer left %d unread bytes; closing", self.info.conn_id, self.unread)
                self._fail(qmux.FLOW_CONTROL_ERROR, "receive buffers exceeded")
                return
            self.kick()
            if self.unsent > OUTGOING_HIGH_WATER and not await self._wait_drained():
                log.warning("conn=%s peer read nothing of %d queued bytes for %.0fs; closing",
                            self.info.conn_id, self.unsent, STALL_TIMEOUT)
                self._fail(qmux.FLOW_CONTROL_ERROR, "peer does not read")
                return

    async def _wait_drained(self) -> bool:
        """Wait until the writer holds at most OUTGOING_LOW_WATER or the session is over; False
        if no message left for STALL_TIMEOUT in the meantime."""
        while self.unsent > OUTGOING_LOW_WATER and self.closed is None:
            self._sent = trio.Event()
            with trio.move_on_after(STALL_TIMEOUT):
                await self._sent.wait()
                continue
            return False
        self._sent = None
        return True

    def _forget_finished(self) -> None:
        """Drop stream objects whose both halves are over: one uni stream per group adds up."""
        for sid, stream in list(self.streams.items()):
            receive_over = (sid & 2 and self.conn.is_local(sid)) or stream.fin or stream.error is not None
            if stream.send_done and receive_over and not stream.buf:
                del self.streams[sid]

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        finally:
            self._writer_done.set()

    async def _write_loop(self) -> None:
        rounds = 0
        while True:
            rounds += 1
            if rounds % 512 == 0:
                self._forget_finished()
            messages = self.conn.messages_to_send()
            self.unsent += sum(map(len, messages))
            for message in messages:
                await self.channel.send(message)
                self.unsent -= len(message)
                if self._sent is not None:
                    self._sent.set()
            if messages:
                self._last_activity = trio.current_time()
            self.progress.set()
            self.progress = trio.Event()
            if self.conn.closed and self.closed is not None:
                return
            await self._kick.wait()
            self._kick = trio.Event()

    def kick(self) -> None:
        self._kick.set()

    def _stream(self, sid: int) -> _Stream | None:
        stream = self.streams.get(sid)
        if stream is None and not self.conn.is_local(sid):
            if len(self._accept_bi) + len(self._accept_uni) >= ACCEPT_BACKLOG:
                self.conn.stop_sending(sid, 11)
                if not sid & 2:
                    self.conn.reset_stream(sid, 11)
                return None
            stream = self.streams[sid] = _Stream(self, sid)
            (self._accept_uni if sid & 2 else self._accept_bi).append(stream)
            self._arrived.set()
            self._arrived = trio.Event()
        return stream

    def _dispatch(self) -> None:
        for ev in self.conn.events():
            if isinstance(ev, qmux.StreamData):
                stream = self._stream(ev.stream_id)
                if stream is None or stream.error is not None:
                    continue
                if ev.data:
                    stream.buf.append(ev.data)
                    self.unread += len(ev.data)
                    if stream.buf.size > STREAM_RECV_LIMIT:
                        stream.stop(11)
                        stream.error = StreamReset(11)
                if ev.fin:
                    stream.fin = True
                    if not stream.buf:
                        self.conn.consumed(stream.stream_id, 0, fin_read=True)
                stream._wake()
            elif isinstance(ev, qmux.StreamReset):
                stream = self._stream(ev.stream_id)
                if stream is not None and not stream.fin:
                    self.unread -= stream.buf.clear()
                    stream.error = StreamReset(ev.code)  # QMux codes are raw moq codes
                    stream._wake()
            elif isinstance(ev, qmux.StopSending):
                stream = self._stream(ev.stream_id)
                if stream is not None:
                    stream.stopped = ev.code
                    stream.send_done = True
                    self.conn.reset_stream(ev.stream_id, ev.code)
                    stream._wake()
                    self.progress.set()
                    self.progress = trio.Event()
            elif isinstance(ev, qmux.ConnectionClosed):
                self._terminate(SessionClosed(ev.code, ev.reason))
        self._credit.set()
        self._credit = trio.Event()

    def _fail(self, code: int, reason: str) -> None:
        self.conn.close(code, reason)
        self._terminate(SessionClosed(code, reason))
        self.kick()

    def _terminate(self, exc: SessionClosed) -> None:
        if self.closed is not None:
            return
        self.closed = exc
        for stream in self.streams.values():
            stream._wake()
        self._arrived.set()
        self.progress.set()
        self._credit.set()
        self._closed_event.set()
        if self._sent is not None:
            self._sent.set()  # a reader waiting for a slow peer to drain stops waiting
        self.kick()

    # -- TransportSession ------------------------------------------------------------------------
    async def _accept(self, queue: collections.deque[_Stream]) -> _Stream:
        while not queue:
            if self.closed is not None:
                raise self.closed
            await self._arrived.wait()
        return queue.popleft()

    async def accept_bi(self) -> tuple[SendStream, RecvStream]:
        stream = await self._accept(self._accept_bi)
        return stream, stream

    async def accept_uni(self) -> RecvStream:
        return await self._accept(self._accept_uni)

    async def _open(self, uni: bool) -> _Stream:
        while not self.conn.can_open(uni):
            if self.closed is not None:
                raise self.closed
            await self._credit.wait()  # wait for the peer's MAX_STREAMS
        if self.closed is not None:
            raise self.closed
        sid = self.conn.open_stream(uni)
        stream = self.streams[sid] = _Stream(self, sid)
        return stream

    async def open_bi(self) -> tuple[SendStream, RecvStream]:
        stream = await self._open(False)
        return stream, stream

    async def open_uni(self) -> SendStream:
        return await self._open(True)

    @property
    def max_datagram_size(self) -> int:
        return 0  # no datagrams over WebSocket (lite §5.9)

    def send_datagram(self, data: bytes) -> None:
        pass

    async def recv_datagram(self) -> bytes:
        await self._closed_event.wait()
        assert self.closed is not None
        raise self.closed

    def close(self, code: int = 0, reason: str = "") -> None:
        if self.closed is not None:
            return
        self.conn.close(code, reason)
        self._terminate(SessionClosed(code, reason))

    async def wait_closed(self) -> SessionClosed:
        await self._closed_event.wait()
        assert self.closed is not None
        return self.closed

    async def flush_and_close(self) -> None:
        """Send what is queued (the APPLICATION_CLOSE included), then close the WebSocket."""
        with trio.move_on_after(2):
            for message in self.conn.messages_to_send():
                await self.channel.send(message)
        with trio.move_on_after(2):
            try:
                await self.channel.close(1000, "")
            except Exception:
                pass


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take()` waits for one."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = trio.current_time()

    async def take(self) -> None:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            await trio.sleep((1 - self.tokens) / self.rate)
            self.tokens = 1.0
            self.stamp = trio.current_time()
        self.tokens -= 1


class QuartChannel:
    """quart's `websocket` object as a MessageChannel."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def receive(self) -> bytes | str:
        return await self.ws.receive()

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)
