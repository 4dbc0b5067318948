"""A moq-lite session (lite-01 … lite-06) between the relay and one peer, over any transport.

The peer may publish (`LiteSubscriber`: we learn its broadcasts and pull its tracks) and
subscribe (`LitePublisher`: we answer its requests from the origin), both at once. This module
holds the session's life: set-up, scope, the accept loops and the dispatch of each stream to
one of the two sides. Every task lives in the session's nursery, so losing the session cancels
its streams, its fan-out and its upstream pulls; the tracks it was filling are closed so readers
elsewhere end cleanly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from relay.auth.contract import facts_of
from relay.auth.scope import AuthError, Decide, Scope, refusal_reason
from relay.errors import Refused
from relay.model.origin import Origin
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.publisher import LitePublisher
from relay.protocol.lite.setup import (
    LegacySetup,
    PeerSetup,
    negotiate_legacy,
    our_setup,
    read_peer_setup,
    watch_legacy_stream,
)
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.subscriber import LiteSubscriber
from relay.protocol.lite.version import Version
from relay.protocol.tasks import SessionTasks
from relay.transport.base import RecvStream, SendStream, SessionClosed, TransportError, TransportSession

__all__ = ["LegacySetup", "LiteSession", "SessionLimits", "negotiate_legacy"]

log = logging.getLogger("relay.session")



@dataclass
class SessionLimits:
    """Everything a peer can grow, bounded."""

    max_bi_streams: int = 4096  # concurrent control streams (announce/subscribe/track/fetch)
    max_subscriptions: int = 2048  # concurrent downstream subscriptions
    max_announce_streams: int = 64
    max_published: int = 4096  # broadcasts this peer may announce at once
    max_inflight_groups: int = 64  # per downstream subscription; older ones are dropped
    max_message: int = 64 * 1024  # control messages
    max_frame: int = 32 * 1024 * 1024
    setup_timeout: float = 10.0
    track_info_timeout: float = 10.0




class LiteSession(SessionTasks):
    """One peer's moq-lite session. `run()` returns when the session is over."""

    def __init__(self, transport: TransportSession, version: Version, origin: Origin, *,
                 authorize: Decide, hop_id: int, scope: Scope | None = None,
                 limits: SessionLimits | None = None, legacy: LegacySetup | None = None,
                 dial_path: str | None = None, link_cost: int | None = None) -> None:
        self.transport = transport
        self.version = version
        self.origin = origin
        self.authorize = authorize
        self.hop_id = hop_id
        self.scope = scope
        self.limits = limits or SessionLimits()
        self._identify(transport, version.name_str)
        self.peer_hop: int = 0  # the peer's origin id (SETUP Origin or ANNOUNCE_OK)
        self._ready = trio.Event()  # set once the scope is known (after SETUP on raw QUIC 05+)
        self._peer_setup = trio.Event()
        # Why the session was refused at set-up, if it was (sessions_refused_total's reason).
        self.refusal: str | None = None
        self._setup_path: str | None = legacy.path if legacy is not None else None
        self._legacy = legacy
        # Outbound (cluster) sessions: the path+query we ask for in our SETUP. Every session
        # adds its link's price to the routes learned over it (default 1, as the Rust stack does
        # on receipt): a dialer's `?cost=`, or the Cost its peer declared in SETUP. Pricing
        # only one side of a link made a two-hop route through an inbound link cheaper than
        # the direct one.
        self.dial_path = dial_path
        self._declared_cost = link_cost
        self.link_cost = 1 if link_cost is None else link_cost
        self._nursery: trio.Nursery | None = None
        self._goaway = trio.Event()
        self._goaway_uri = ""
        self._bi_active = 0
        self.failovers_total = 0  # subscriptions moved to another route (relay spec §10.3)
        self.publisher = LitePublisher(self)
        self.subscriber = LiteSubscriber(self)
        # Bidi stream type -> (its first message's decoder, the publisher's handler), per version.
        p = self.publisher
        self._requests: dict[int, tuple[Callable, Callable]] = {
            m.BiStream.ANNOUNCE: (m.AnnounceRequest.decode, p.serve_announce),
            m.BiStream.SUBSCRIBE: (m.Subscribe.decode, p.serve_subscribe),
        }
        if version.has_track_stream:
            self._requests[m.BiStream.TRACK] = (m.TrackRequest.decode, p.serve_track_info)
        if version.has_fetch:
            self._requests[m.BiStream.FETCH] = (m.Fetch.decode, p.serve_fetch)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        said_closed = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._accept_bi_loop)
                nursery.start_soon(self._accept_uni_loop)
                if self.version.has_setup_stream:
                    nursery.start_soon(self._send_setup)
                if self._legacy is not None:
                    nursery.start_soon(self._watch_legacy_stream, self._legacy)
                if self.version.has_datagrams and self.transport.max_datagram_size > 0:
                    nursery.start_soon(self.subscriber.recv_datagrams)
                if self.version >= Version.LITE_04:
                    nursery.start_soon(self._goaway_when_asked)
                try:
                    await self._establish_scope()
                except AuthError as exc:
                    log.warning("%s refused: %s", self.name, exc.reason)
                    self.refusal = refusal_reason(exc)
                    self.transport.close(ErrorCode.UNAUTHORIZED, "unauthorized")
                    nursery.cancel_scope.cancel()
                    return
                except ProtocolError as exc:
                    self.fail(exc)
                    nursery.cancel_scope.cancel()
                    return
                assert self.scope is not None
                if self._refuse_role():
                    said_closed = True  # the refusal was logged: not "ended" as well
                    nursery.cancel_scope.cancel()
                    return
                log.info("%s accepted root=/%s publish=%s subscribe=%s", self.name, self.scope.root,
                         [p.text for p in self.scope.publish], [p.text for p in self.scope.subscribe])
                self._ready.set()
                if self.scope.publish:
                    nursery.start_soon(self.subscriber.learn_announcements)
                if self.scope.expires is not None:
                    nursery.start_soon(self._expire_at, self.scope.expires)
                if self.scope.lease is not None:
                    nursery.start_soon(self.scope.lease.keep, self._lease_ended,
                                       lambda: self.transport.info.bytes_out, lambda: self.transport.info.bytes_in,
                                       self._rescope)
                closed = await self.transport.wait_closed()
                log.info("%s closed code=%s reason=%s", self.name, closed.code, closed.reason)
                said_closed = True
                nursery.cancel_scope.cancel()
        finally:
            if not said_closed and self.scope is not None:
                # Cancelled from outside, e.g. a WebSocket whose TCP connection simply went away.
                log.info("%s ended (its connection went away, or the relay is stopping)", self.name)
            self._nursery = None
            self.subscriber.close()

    def send_goaway(self, uri: str = "") -> None:
        """Ask the peer to leave (lite-04+; older versions simply get closed at the end of a drain)."""
        self._goaway_uri = uri
        self._goaway.set()

    async def _goaway_when_asked(self) -> None:
        await self._goaway.wait()
        try:
            send, recv = await self.transport.open_bi()
            await send.write(m.encode_bi_type(m.BiStream.GOAWAY) + m.Goaway(self._goaway_uri).encode(self.version))
            await send.finish()
            recv.stop(ErrorCode.CANCEL)
        except TransportError:
            pass

    async def _establish_scope(self) -> None:
        if self.scope is not None:
            return
        target = self.transport.info.path or self._setup_path
        if not target and self.version.has_setup_stream and self.transport.info.transport == "quic":
            # Raw QUIC carries the path in the client's SETUP (lite-05+).
            with trio.move_on_after(self.limits.setup_timeout):
                await self._peer_setup.wait()
            if not self._peer_setup.is_set():
                raise ProtocolError(ErrorCode.TIMEOUT, "no SETUP from the client")
            target = self._setup_path or ""
        self.transport.info.target = target or "/"
        self.scope = await self.authorize(target or "/", facts_of(self.transport.info))

    async def _watch_legacy_stream(self, legacy: LegacySetup) -> None:
        """lite-01/02: the SETUP stream lives as long as the session; its end ends the session."""
        try:
            why = await watch_legacy_stream(legacy, self.version, self.limits.max_message)
        except SessionClosed:
            return
        except TransportError as exc:
            why = f"reset ({exc})"
        log.info("%s session stream %s", self.name, why)
        self.transport.close(ErrorCode.CANCEL, "session stream closed")

    def _lease_ended(self, reason: str) -> None:
        self.transport.close(ErrorCode.UNAUTHORIZED, reason)

    async def _expire_at(self, when: float) -> None:
        await trio.sleep(max(0.0, when - time.time()))
        log.info("%s token expired", self.name)
        self.transport.close(ErrorCode.UNAUTHORIZED, "token expired")

    async def _send_setup(self) -> None:
        try:
            stream = await self.transport.open_uni()
            await stream.write(our_setup(self.version, self.hop_id, self.dial_path, self._declared_cost))
            await stream.finish()
        except TransportError:
            pass

    # ------------------------------------------------------------------ accept loops
    async def _accept_uni_loop(self) -> None:
        try:
            while True:
                recv = await self.transport.accept_uni()
                self.spawn(self._handle_uni, recv)
        except SessionClosed:
            pass

    async def _accept_bi_loop(self) -> None:
        try:
            while True:
                send, recv = await self.transport.accept_bi()
                if self._bi_active >= self.limits.max_bi_streams:
                    log.warning("%s too many control streams; refusing one", self.name)
                    send.reset(ErrorCode.BOUNDS_EXCEEDED)
                    recv.stop(ErrorCode.BOUNDS_EXCEEDED)
                    continue
                self.spawn(self._handle_bi, send, recv)
        except SessionClosed:
            pass

    async def _handle_uni(self, recv: RecvStream) -> None:
        reader = MessageReader(recv, self.limits.max_frame + 64)
        kind: int | None = None
        try:
            kind = await reader.varint()
            if kind == m.UniStream.GROUP:
                await self.subscriber.recv_group(reader, recv)
            elif kind == m.UniStream.SETUP and self.version.has_setup_stream:
                self._on_peer_setup(await read_peer_setup(reader, self.version, self.limits.max_message))
            else:
                log.info("%s unknown uni stream type %s", self.name, kind)
                recv.stop(ErrorCode.UNEXPECTED_STREAM)
        except StreamEnded:
            pass
        except TransportError:
            pass
        except ProtocolError as exc:
            if kind == m.UniStream.SETUP:
                self.fail(exc)
            else:
                log.info("%s bad uni stream: %s", self.name, exc)
                recv.stop(exc.code)

    def _on_peer_setup(self, setup: PeerSetup) -> None:
        if self._peer_setup.is_set():
            raise ProtocolError(ErrorCode.PROTOCOL_VIOLATION, "duplicate SETUP")
        if setup.path is not None:
            self._setup_path = setup.path
        if setup.origin is not None:
            self.peer_hop = setup.origin
        if setup.cost is not None and self._declared_cost is None:
            self.link_cost = setup.cost
        if setup.role is not None:
            self.transport.info.role = setup.role
        self._peer_setup.set()
        if self._ready.is_set():
            self._refuse_role()  # the scope came first (WebTransport, WebSocket)

    def _refuse_role(self) -> bool:
        """A client that declared one direction (SETUP Role) its scope grants nothing in is
        refused (code 6, as 0.17's Forbidden): it could do nothing here. True if it was."""
        role, scope = self.transport.info.role, self.scope
        if role is None or scope is None:
            return False
        granted = scope.publish if role == "publisher" else scope.subscribe
        if granted:
            return False
        log.warning("%s refused: forbidden: declared role %s, but nothing is granted to %s at /%s",
                    self.name, role, "publish" if role == "publisher" else "subscribe", scope.root)
        self.refusal = "forbidden"
        self.transport.close(ErrorCode.UNAUTHORIZED, "forbidden")
        return True

    async def _handle_bi(self, send: SendStream, recv: RecvStream) -> None:
        self._bi_active += 1
        reader = MessageReader(recv, self.limits.max_message + 16)
        try:
            kind = await reader.varint()
            with trio.move_on_after(self.limits.setup_timeout) as cs:
                await self._ready.wait()
            if cs.cancelled_caught:
                raise ProtocolError(ErrorCode.TIMEOUT, "stream before the session was ready")
            v = self.version
            request = self._requests.get(kind)
            if request is not None:
                # A request the peer makes of our publishing side: its first message, then serve.
                decode, serve = request
                first = await reader.message(decode, v, self.limits.max_message)
                if first is not None:  # a FIN before the request: nothing was asked
                    await serve(send, reader, first)
            elif kind == m.BiStream.PROBE:
                await self._hold_probe(reader)
            elif kind == m.BiStream.GOAWAY and v >= Version.LITE_04:
                goaway = await reader.message(m.Goaway.decode, v, self.limits.max_message)
                log.info("%s peer sent GOAWAY %r", self.name, goaway)
                await send.finish()
            else:
                log.info("%s unknown bidi stream type %s", self.name, kind)
                send.reset(ErrorCode.UNEXPECTED_STREAM)
                recv.stop(ErrorCode.UNEXPECTED_STREAM)
        except StreamEnded:
            send.reset(ErrorCode.CANCEL)
        except TransportError:  # reset, stopped, or the connection went away mid-write
            send.reset(ErrorCode.CANCEL)
            recv.stop(ErrorCode.CANCEL)
        except ProtocolError as exc:
            log.info("%s stream error: %s", self.name, exc)
            send.reset(exc.code)
            recv.stop(exc.code)
        except Refused as exc:
            log.info("%s request refused: %s", self.name, exc)
            send.reset(exc.code)
            recv.stop(exc.code)
        finally:
            self._bi_active -= 1

    async def _hold_probe(self, reader: MessageReader) -> None:
        # We measure nothing, so we never report; keep the stream quietly until the peer ends it.
        while await reader.message(m.Probe.decode, self.version, self.limits.max_message) is not None:
            pass
