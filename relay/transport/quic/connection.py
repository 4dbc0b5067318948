"""One QUIC connection on trio: the engine's connection state, its timer, write coalescing,
and the application protocol its ALPN selected.

The connection handles the engine events that are about the connection (connection IDs,
ALPN, handshake, termination) and hands every other event to its `ConnectionApp`: raw moq
(session.py) or WebTransport (webtransport.py), chosen through the endpoint's `AppRegistry`.
The connection never knows which one it carries.

Task tree: the endpoint runs `run()` per connection; it owns a nursery holding the driver
(timer / flush) and the session handler, so cancelling a connection cancels all of it. The
handler's task starts with the nursery and waits there until the app has a session for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from relay.transport.base import TransportError, TransportSession, next_conn_id
from relay.transport.engines import Engine
from relay.transport.quic.codes import BUFFER_EXCEEDED_CODE, HANDLER_ERROR_CODE, INTERNAL_ERROR
from relay.transport.quic.udp import UdpSocket, format_addr

log = logging.getLogger(__name__)

Handler = Callable[[TransportSession], Awaitable[None]]


class ConnectionApp(Protocol):
    """The application protocol on one connection (raw moq, WebTransport), chosen by ALPN."""

    def handshake_completed(self) -> None:
        """The QUIC handshake is done."""

    def handle_event(self, event: Any) -> None:
        """An engine event the connection does not handle itself (streams, datagrams)."""

    def connection_terminated(self, error_code: int, reason: str) -> None:
        """The QUIC connection is gone: fail every stream and mark the session closed."""


AppFactory = Callable[["Connection"], ConnectionApp]


@dataclass(frozen=True)
class AppRegistry:
    """The application protocols of an endpoint: by ALPN for the connections it accepts, and
    the one that runs the connections it dials."""

    by_alpn: Mapping[str, AppFactory]
    outbound: AppFactory

    @property
    def alpns(self) -> list[str]:
        return list(self.by_alpn)

    def factory(self, alpn: str | None, *, dialed: bool) -> AppFactory | None:
        if dialed:
            return self.outbound
        return self.by_alpn.get(alpn) if alpn is not None else None


@dataclass(frozen=True)
class _PendingClose:
    """A connection close waiting until the peer acknowledged a stream (see close_when_acknowledged)."""

    stream_id: int
    error_code: int
    reason: str
    deadline: float


# The application close of a connection that never asked for a session in time: H3_NO_ERROR,
# since only HTTP/3 (WebTransport) connections wait for one (raw QUIC has its session at once).
NO_SESSION_CODE = 0x100


@dataclass(frozen=True)
class ConnectionSettings:
    """The endpoint's limits every connection and its session apply."""

    keep_alive: float | None = None  # seconds without a received packet before we PING
    stream_buffer_limit: int = 8 << 20  # unread bytes of one stream before it is stopped
    connection_buffer_limit: int = 64 << 20  # unread bytes of all streams before the close
    accept_backlog: int = 1024  # peer streams waiting for accept_bi/accept_uni
    handshake_timeout: float = 10.0  # an accepted connection not established by then is dropped


class ConnectionRouter(Protocol):
    """The endpoint's side of a connection: which connection IDs reach it."""

    def add_cid(self, cid: bytes, conn: Connection) -> None: ...

    def remove_cid(self, cid: bytes, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None:
        """The connection is over: route nothing more to it."""

    def established(self, conn: Connection) -> None:
        """The connection's handshake completed (it no longer counts as pending)."""


class Connection:
    """One QUIC connection: engine state, its CIDs, its driver task and its session."""

    def __init__(self, router: ConnectionRouter, sock: UdpSocket, quic: Any, addr: Any, *, engine: Engine,
                 apps: AppRegistry, handler: Handler, settings: ConnectionSettings, dialed: bool = False) -> None:
        self.router = router
        self.engine = engine
        self.sock = sock
        self.quic = quic
        self.addr = addr
        self.apps = apps
        self.handler = handler
        self.settings = settings
        self.dialed = dialed
        self.conn_id = next_conn_id()
        self.cids: set[bytes] = set()
        self.alpn: str | None = None
        self.app: ConnectionApp | None = None
        self.session: TransportSession | None = None  # once the handler runs it
        self.priorities: dict[int, int] = {}
        self.unread_total = 0  # received stream bytes nobody read yet, all streams
        self.terminated = False
        self.established = False  # the handshake completed
        self._born = trio.current_time()
        self._closed_without_session = False  # closed for asking for no session in time
        self._cancel = trio.CancelScope()  # around run(): cancelled when the connection ends
        self._nursery: trio.Nursery | None = None  # run()'s: the handler and the apps' tasks
        self._settled = trio.Event()  # the session started, or the connection ended before
        self._pending_close: _PendingClose | None = None
        self._wake_event = trio.Event()
        self._flushed = trio.lowlevel.ParkingLot()
        self._last_rx = trio.current_time()
        self._ping_uid = 0

    @property
    def remote(self) -> str:
        """The peer's address, for logs and SessionInfo."""
        return format_addr(self.addr)

    # -- called by the socket reader (synchronous, batched)
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
                    self.router.add_cid(ev.connection_id, self)
                elif isinstance(ev, qe.ConnectionIdRetired):
                    self.router.remove_cid(ev.connection_id, self)
                elif isinstance(ev, qe.ProtocolNegotiated):
                    self._choose_app(ev.alpn_protocol)
                elif isinstance(ev, qe.HandshakeCompleted):
                    if not self.established:
                        self.established = True
                        self.router.established(self)
                    self._choose_app(ev.alpn_protocol)
                    if self.app is not None:
                        self.app.handshake_completed()
                elif isinstance(ev, qe.ConnectionTerminated):
                    self._on_terminated(ev.error_code, ev.reason_phrase or "")
                elif self.app is not None:
                    self.app.handle_event(ev)
            except Exception:
                # Peer misbehaviour or our bug: confine it to this connection.
                log.exception("conn=%d failed handling %s; closing", self.conn_id, type(ev).__name__)
                self._fail()
        if not self.terminated and self.unread_total > self.settings.connection_buffer_limit:
            log.warning("conn=%d receive buffers over limit; closing", self.conn_id)
            if self.session is not None:
                self.session.close(BUFFER_EXCEEDED_CODE, "receive buffer limit")
            else:
                self.close_quic(BUFFER_EXCEEDED_CODE, "receive buffer limit")

    def _choose_app(self, alpn: str | None) -> None:
        if self.app is not None or self.terminated:
            return
        self.alpn = alpn
        factory = self.apps.factory(alpn, dialed=self.dialed)
        if factory is None:
            # Only ALPNs we offered can be negotiated, and each has an app: our bug.
            log.error("conn=%d no application protocol for ALPN %r; closing", self.conn_id, alpn)
            self.close_quic(INTERNAL_ERROR, "no application protocol")
            return
        self.app = factory(self)

    def _on_terminated(self, error_code: int, reason: str) -> None:
        if self.terminated:
            return
        self.terminated = True
        log.debug("conn=%d terminated (code %#x: %s)", self.conn_id, error_code, reason)
        if self.app is not None:
            self.app.connection_terminated(error_code, reason)
        self.router.forget(self)
        self.unpark_writers()
        self._settled.set()
        self._cancel.cancel()

    def _fail(self) -> None:
        try:
            self.quic.close(error_code=INTERNAL_ERROR, reason_phrase="internal error")
        except Exception:
            self._on_terminated(INTERNAL_ERROR, "internal error")

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

    def close_when_acknowledged(self, stream_id: int, code: int, reason: str, timeout: float) -> None:
        """close_quic once the peer acknowledged all we sent on `stream_id` (WebTransport's
        close capsule), at the latest after `timeout` seconds; the peer closing first ends it."""
        if self.terminated or self._pending_close is not None:
            return
        self._pending_close = _PendingClose(stream_id, code, reason, trio.current_time() + timeout)
        self.wake()

    def _close_if_acknowledged(self, now: float) -> None:
        pending = self._pending_close
        if pending is None or self.terminated:
            return
        if now >= pending.deadline or self.engine.sent_data_acknowledged(self.quic, pending.stream_id):
            self._pending_close = None
            self.close_quic(pending.error_code, pending.reason)

    # -- streams (the StreamWire of stream.py)
    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        try:
            self.quic.send_stream_data(stream_id, data, end_stream=end_stream)
        except Exception as e:  # engine says the stream is gone
            raise TransportError(f"stream {stream_id}: {e}") from e
        finally:
            self.wake()

    def stop_stream(self, stream_id: int, wire_code: int) -> None:
        try:
            self.quic.stop_stream(stream_id, wire_code)
        except Exception:  # already finished/discarded in the engine: nothing to stop
            pass
        self.wake()

    def reset_stream(self, stream_id: int, wire_code: int) -> None:
        try:
            self.quic.reset_stream(stream_id, wire_code)
        except Exception:  # already finished/discarded in the engine: nothing to reset
            pass
        self.wake()

    def unsent_bytes(self, stream_id: int) -> int:
        return self.engine.unsent_bytes(self.quic, stream_id)

    def can_open_stream(self, uni: bool) -> bool:
        return self.engine.can_open_stream(self.quic, uni)

    def set_priority(self, stream_id: int, priority: int) -> None:
        self.priorities[stream_id] = priority

    def count_unread(self, delta: int) -> None:
        self.unread_total += delta

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
            self._on_terminated(INTERNAL_ERROR, "internal error")
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
    def start_handler(self, session: TransportSession) -> None:
        """The app has its session: let the handler run it (once per connection)."""
        if self.session is not None:
            return
        self.session = session
        self._settled.set()

    async def wait_settled(self) -> None:
        """Until the handler got its session or the connection ended without one."""
        await self._settled.wait()

    async def _run_handler(self) -> None:
        await self._settled.wait()
        session = self.session
        if session is None:
            return  # the connection ended before it had a session
        try:
            await self.handler(session)
        except* Exception:
            # Failures stay in this connection, also when they arrive grouped with a Cancelled
            # (the relay shutting down): that part propagates, the rest is logged here.
            log.exception("conn=%d session handler failed", self.conn_id)
            session.close(HANDLER_ERROR_CODE, "internal error")
        else:
            session.close(0, "")

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run `fn(*args)` for this connection (an app's wait, e.g. a CONNECT's admission):
        cancelled when the connection ends. Only while run() runs."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    async def run(self) -> None:
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._run_handler)
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
        keep_alive = self.settings.keep_alive
        while not self.terminated:
            timer = self.quic.get_timer()
            deadline = math.inf if timer is None else timer
            if keep_alive:
                deadline = min(deadline, self._last_rx + keep_alive)
            if self._pending_close is not None:
                deadline = min(deadline, self._pending_close.deadline)
            handshake_deadline = math.inf if self.established or self.dialed else \
                self._born + self.settings.handshake_timeout
            # Established but no session yet (WebTransport waits for the CONNECT): a client that
            # keeps the connection alive without asking for one is closed at the same deadline.
            session_deadline = math.inf if self.session is not None or self.dialed or not self.established \
                or self._closed_without_session else self._born + self.settings.handshake_timeout
            deadline = min(deadline, handshake_deadline, session_deadline)
            if self._wake_event.is_set():
                # Woken while flushing (the common case under load): no cancel scope needed.
                await trio.lowlevel.checkpoint()
            else:
                with trio.move_on_at(deadline):
                    await self._wake_event.wait()
            self._wake_event = trio.Event()
            now = trio.current_time()
            if now >= handshake_deadline and not self.established:
                # Half-open (a client gone quiet, or a spoofed address): forget it without a
                # word, so a flood of Initials holds its table slots for a bounded time.
                log.debug("conn=%d handshake not done after %.0fs; dropped", self.conn_id,
                          self.settings.handshake_timeout)
                self._on_terminated(0, "handshake timeout")
                return
            if now >= session_deadline:
                log.info("conn=%d peer=%s no session %.0fs after it connected; closed", self.conn_id,
                         self.remote, self.settings.handshake_timeout)
                self._closed_without_session = True
                self.close_quic(NO_SESSION_CODE, "no session")
            if timer is not None and now >= timer:
                try:
                    self.quic.handle_timer(now)
                except Exception:
                    log.exception("conn=%d engine timer failed", self.conn_id)
                    self._on_terminated(INTERNAL_ERROR, "internal error")
                    return
                self.process_events()
            if keep_alive and now >= self._last_rx + keep_alive and not self.terminated:
                self._ping_uid += 1
                try:
                    self.quic.send_ping(self._ping_uid)
                except Exception:
                    pass
                self._last_rx = now  # one PING per idle period
            self._close_if_acknowledged(now)
            self.transmit()
