"""A moq-lite session (lite-03 … lite-06) between the relay and one peer, over any transport.

The peer may publish (we learn its broadcasts through our announce request and pull its tracks
with one upstream subscription each) and subscribe (we answer its announce requests from the
origin and fan groups out to it), both at once. Every task here lives in the session's
nursery, so losing the session cancels its streams, its fan-out and its upstream pulls; the
tracks it was filling are closed so readers elsewhere end cleanly.

Codec work (bytes <-> messages) is in `messages`/`coding`; this module only moves messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from relay.auth.scope import AuthError, Scope
from relay.concurrency import open_nursery
from relay.model import path as paths
from relay.model.broadcast import Broadcast, LimitExceeded, Subscription
from relay.model.origin import Origin
from relay.model.subscription import Wish
from relay.model.track import Frame, Group, GroupAborted, TooLarge, Track, TrackClosed, TrackInfo
from relay.protocol.lite import legacy
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.version import Version
from relay.transport.base import (
    RecvStream,
    SendStream,
    SessionClosed,
    StreamReset,
    TransportError,
    TransportSession,
)

log = logging.getLogger("relay.session")

_session_ids = itertools.count(1)


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


# authorize(request path with query) -> Scope; raises AuthError.
Authorizer = Callable[[str], Scope]


class LiteSession:
    """One peer's moq-lite session. `run()` returns when the session is over."""

    def __init__(self, transport: TransportSession, version: Version, origin: Origin, *,
                 authorize: Authorizer, hop_id: int, scope: Scope | None = None,
                 limits: SessionLimits | None = None, legacy: LegacySetup | None = None,
                 dial_path: str | None = None, link_cost: int | None = None) -> None:
        self.transport = transport
        self.version = version
        self.origin = origin
        self.authorize = authorize
        self.hop_id = hop_id
        self.scope = scope
        self.limits = limits or SessionLimits()
        self.id = next(_session_ids)
        info = transport.info
        self.name = f"session={self.id} conn={info.conn_id} {info.transport}/{version.name_str} peer={info.remote}"
        self.peer_hop: int = 0  # the peer's origin id (SETUP Origin or ANNOUNCE_OK)
        self._ready = trio.Event()  # set once the scope is known (after SETUP on raw QUIC 05+)
        self._peer_setup = trio.Event()
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
        self._bi_active = 0
        self._subscriptions: set[int] = set()
        self.failovers_total = 0  # subscriptions moved to another route (relay spec §10.3)
        self._announce_streams = 0
        self._published: dict[str, Broadcast] = {}
        self._upstream: dict[int, Track] = {}
        self._next_upstream_id = 0

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
                    nursery.start_soon(self._watch_session_stream, self._legacy)
                if self.version.has_datagrams and self.transport.max_datagram_size > 0:
                    nursery.start_soon(self._recv_datagrams)
                try:
                    await self._establish_scope()
                except AuthError as exc:
                    log.warning("%s refused: %s", self.name, exc.reason)
                    self.transport.close(ErrorCode.UNAUTHORIZED, "unauthorized")
                    nursery.cancel_scope.cancel()
                    return
                except ProtocolError as exc:
                    self._fail(exc)
                    nursery.cancel_scope.cancel()
                    return
                assert self.scope is not None
                log.info("%s accepted root=/%s publish=%s subscribe=%s", self.name, self.scope.root,
                         list(self.scope.publish), list(self.scope.subscribe))
                self._ready.set()
                if self.scope.publish:
                    nursery.start_soon(self._learn_announcements)
                if self.scope.expires is not None:
                    nursery.start_soon(self._expire_at, self.scope.expires)
                closed = await self.transport.wait_closed()
                log.info("%s closed code=%s reason=%s", self.name, closed.code, closed.reason)
                said_closed = True
                nursery.cancel_scope.cancel()
        finally:
            if not said_closed and self.scope is not None:
                # Cancelled from outside, e.g. a WebSocket whose TCP connection simply went away.
                log.info("%s ended (its connection went away, or the relay is stopping)", self.name)
            self._nursery = None
            for broadcast in list(self._published.values()):
                self.origin.unpublish(broadcast)
                broadcast.close(ErrorCode.CANCEL)
            self._published.clear()
            for track in list(self._upstream.values()):
                track.close(ErrorCode.CANCEL)
            self._upstream.clear()

    def send_goaway(self, uri: str = "") -> None:
        """Ask the peer to leave (lite-04+; older versions simply get closed at the end of a drain)."""
        if self.version >= Version.LITE_04:
            self._spawn(self._goaway, uri)

    async def _goaway(self, uri: str) -> None:
        try:
            send, recv = await self.transport.open_bi()
            await send.write(m.encode_bi_type(m.BiStream.GOAWAY) + m.Goaway(uri).encode(self.version))
            await send.finish()
            recv.stop(ErrorCode.CANCEL)
        except TransportError:
            pass

    def _fail(self, exc: ProtocolError) -> None:
        """A session-level protocol violation: close everything with the error's code."""
        log.warning("%s protocol violation: %s", self.name, exc)
        self.transport.close(exc.code, str(exc)[:100])

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
        self.scope = self.authorize(target or "/")

    async def _recv_datagrams(self) -> None:
        """Datagrams from a publisher (lite-05+): each is a one-frame group for one subscription."""
        try:
            while True:
                data = await self.transport.recv_datagram()
                try:
                    dgram = m.Datagram.decode(data)
                except ProtocolError as exc:
                    log.debug("%s bad datagram dropped: %s", self.name, exc)
                    continue
                track = self._upstream.get(dgram.subscribe_id)
                if track is not None:  # unknown ids are dropped (lite §5.9)
                    track.push_datagram(dgram.sequence, dgram.timestamp, dgram.payload)
        except SessionClosed:
            pass

    async def _watch_session_stream(self, legacy: LegacySetup) -> None:
        """lite-01/02: the SETUP stream lives as long as the session; its end ends the session."""
        try:
            while await legacy.reader.message(_ignore_body, self.version, self.limits.max_message) is not None:
                pass  # SESSION_INFO (bitrate) messages: nothing to do with them
            log.info("%s session stream finished by the peer", self.name)
        except (StreamEnded, StreamReset, ProtocolError):
            log.info("%s session stream ended", self.name)
        except SessionClosed:
            return
        self.transport.close(ErrorCode.CANCEL, "session stream closed")

    async def _expire_at(self, when: float) -> None:
        import time

        await trio.sleep(max(0.0, when - time.time()))
        log.info("%s token expired", self.name)
        self.transport.close(ErrorCode.UNAUTHORIZED, "token expired")

    async def _send_setup(self) -> None:
        try:
            stream = await self.transport.open_uni()
            params = {m.SetupParam.ORIGIN: m.varint(self.hop_id)}
            if self.dial_path is not None:
                params[m.SetupParam.PATH] = self.dial_path.encode()
            if self._declared_cost not in (None, 1) and self.version >= Version.LITE_06:
                params[m.SetupParam.COST] = m.varint(self._declared_cost)
            await stream.write(m.encode_uni_type(m.UniStream.SETUP) + m.Setup(params=params).encode(self.version))
            await stream.finish()
        except TransportError:
            pass

    def _spawn(self, fn, *args) -> bool:
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    # ------------------------------------------------------------------ accept loops
    async def _accept_uni_loop(self) -> None:
        try:
            while True:
                recv = await self.transport.accept_uni()
                self._spawn(self._handle_uni, recv)
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
                self._spawn(self._handle_bi, send, recv)
        except SessionClosed:
            pass

    async def _handle_uni(self, recv: RecvStream) -> None:
        reader = MessageReader(recv, self.limits.max_frame + 64)
        kind: int | None = None
        try:
            kind = await reader.varint()
            if kind == m.UniStream.GROUP:
                await self._recv_group(reader, recv)
            elif kind == m.UniStream.SETUP and self.version.has_setup_stream:
                setup = await reader.message(m.Setup.decode, self.version, self.limits.max_message)
                if setup is None:
                    raise ProtocolError(ErrorCode.DECODE, "empty SETUP stream")
                self._on_peer_setup(setup)
            else:
                log.info("%s unknown uni stream type %s", self.name, kind)
                recv.stop(ErrorCode.UNEXPECTED_STREAM)
        except StreamEnded:
            pass
        except TransportError:
            pass
        except ProtocolError as exc:
            if kind == m.UniStream.SETUP:
                self._fail(exc)
            else:
                log.info("%s bad uni stream: %s", self.name, exc)
                recv.stop(exc.code)

    def _on_peer_setup(self, setup: m.Setup) -> None:
        if self._peer_setup.is_set():
            raise ProtocolError(ErrorCode.PROTOCOL_VIOLATION, "duplicate SETUP")
        path = setup.params.get(m.SetupParam.PATH)
        if path is not None:
            try:
                self._setup_path = path.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(ErrorCode.DECODE, "SETUP path is not UTF-8") from exc
        origin = setup.params.get(m.SetupParam.ORIGIN)
        if origin is not None:
            self.peer_hop = m.decode_varint_param(origin)
        cost = setup.params.get(m.SetupParam.COST)
        if cost is not None and self._declared_cost is None:
            self.link_cost = min(m.decode_varint_param(cost), 2**62 - 1)
        self._peer_setup.set()

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
            if kind == m.BiStream.ANNOUNCE:
                await self._serve_announce(send, reader)
            elif kind == m.BiStream.SUBSCRIBE:
                await self._serve_subscribe(send, recv, reader)
            elif kind == m.BiStream.TRACK and v.has_track_stream:
                await self._serve_track(send, reader)
            elif kind == m.BiStream.FETCH and v.has_fetch:
                await self._serve_fetch(send, reader)
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
        finally:
            self._bi_active -= 1

    async def _hold_probe(self, reader: MessageReader) -> None:
        # We measure nothing, so we never report; keep the stream quietly until the peer ends it.
        while await reader.message(m.Probe.decode, self.version, self.limits.max_message) is not None:
            pass

    # ------------------------------------------------------------------ announcements out
    def _visible(self, abs_path: str, broadcast: Broadcast | None) -> Broadcast | None:
        """The route the peer may see for `abs_path`, or None."""
        if broadcast is None or broadcast.source is self:
            return None
        if self.peer_hop and self.peer_hop in broadcast.hops:
            return None
        if len(broadcast.hops) >= m.MAX_HOPS:
            return None
        return broadcast

    async def _serve_announce(self, send: SendStream, reader: MessageReader) -> None:
        v = self.version
        request = await reader.message(m.AnnounceRequest.decode, v, self.limits.max_message)
        if request is None:
            return
        if self._announce_streams >= self.limits.max_announce_streams:
            raise ProtocolError(ErrorCode.BOUNDS_EXCEEDED, "too many announce streams")
        self._announce_streams += 1
        try:
            prefix = paths.norm(request.prefix)
            exclude = getattr(request, "exclude_hop", 0) or self.peer_hop or None
            assert self.scope is not None
            watch_rel = self.scope.watch_prefixes(prefix)
            writer = _AnnounceWriter(self, send, prefix)
            prefixes = [self.scope.absolute(w) for w in watch_rel]
            with _multi_watch(self.origin, prefixes, exclude) as watchers:
                async with open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_eof, reader, nursery.cancel_scope)
                    snapshot = []
                    for watcher in watchers:
                        snapshot.extend(watcher.snapshot())
                    await writer.initial([(p, self._visible(p, b)) for p, b in snapshot])
                    for watcher in watchers:
                        nursery.start_soon(self._pump_announces, watcher, writer)
            await send.finish()
        finally:
            self._announce_streams -= 1

    async def _pump_announces(self, watcher, writer: _AnnounceWriter) -> None:
        while True:
            changes = await watcher.changes()
            await writer.update([(p, self._visible(p, b)) for p, b in changes])

    # ------------------------------------------------------------------ announcements in
    async def _learn_announcements(self) -> None:
        """Ask the peer what it publishes; mirror it into the origin while the stream lives."""
        v = self.version
        try:
            send, recv = await self.transport.open_bi()
        except TransportError:
            return
        reader = MessageReader(recv, self.limits.max_message + 16)
        mine: dict[str, Broadcast] = {}
        ids: dict[int, str] = {}  # lite-06 announce id -> suffix
        lost: int | None = ErrorCode.CANCEL
        next_id = 0
        try:
            exclude = self.hop_id if v.has_exclude_hop else 0
            await send.write(m.encode_bi_type(m.BiStream.ANNOUNCE)
                             + m.AnnounceRequest(prefix="", exclude_hop=exclude).encode(v))
            peer_hop = 0
            if v.has_announce_ok:
                ok = await reader.message(m.AnnounceOk.decode, v, self.limits.max_message)
                if ok is None:
                    return
                peer_hop = ok.hop_id
                self.peer_hop = self.peer_hop or peer_hop
            elif v.has_announce_init:
                init = await reader.message(m.AnnounceInit.decode, v, self.limits.max_message)
                if init is None:
                    return
                for suffix in init.suffixes:
                    self._announced(mine, suffix, ())
            while True:
                try:
                    if v.has_typed_announce:
                        msg = await reader.typed(m.decode_announce_06, v, self.limits.max_message)
                    else:
                        msg = await reader.message(m.Announce.decode, v, self.limits.max_message)
                except ProtocolError as exc:
                    if exc.code != ErrorCode.BOUNDS_EXCEEDED or v.has_typed_announce:
                        raise
                    # A hop chain over 32 (or a path over 32 parts): refuse that announcement
                    # only; its bytes are already consumed (relay spec §13). On lite-06 an
                    # unparsed START would shift every later announce id, so it stays fatal.
                    log.info("%s announcement refused: %s", self.name, exc)
                    continue
                if msg is None:
                    break
                if isinstance(msg, m.AnnounceStart):
                    ids[next_id] = msg.suffix
                    next_id += 1
                    self._announced(mine, msg.suffix, (*msg.hops, peer_hop), msg.cost)
                elif isinstance(msg, m.AnnounceEnd):
                    suffix = ids.pop(msg.id, None)
                    if suffix is None:
                        raise ProtocolError(ErrorCode.PROTOCOL_VIOLATION, f"unknown announce id {msg.id}")
                    self._unannounced(mine, suffix)
                elif isinstance(msg, m.AnnounceUpdate):
                    suffix = ids.get(msg.id)
                    if suffix is None:
                        raise ProtocolError(ErrorCode.PROTOCOL_VIOLATION, f"unknown announce id {msg.id}")
                    self._announced(mine, suffix, (*msg.hops, peer_hop), msg.cost)
                elif msg.active:
                    if v == Version.LITE_03:
                        hops: tuple[int, ...] = (0,) * msg.hop_count
                    elif v.has_announce_ok:
                        hops = (*msg.hops, peer_hop)
                    else:
                        hops = tuple(msg.hops)
                    self._announced(mine, msg.suffix, hops)
                else:
                    self._unannounced(mine, msg.suffix)
            await send.finish()
        except ProtocolError as exc:
            # Announce-loop errors are session errors, as in the Rust stack.
            self._fail(exc)
            lost = None
        except (StreamEnded, TransportError):
            pass
        finally:
            # Anything but the publisher's own end of the stream means it was lost.
            for suffix in list(mine):
                self._unannounced(mine, suffix, lost)

    def _announced(self, mine: dict[str, Broadcast], suffix: str, hops: tuple[int, ...], cost: int = 0) -> None:
        assert self.scope is not None
        rel = paths.norm(suffix)
        if self.hop_id in hops:
            log.debug("%s ignoring looped announce %s hops=%s", self.name, rel, hops)
            return
        if len(hops) > m.MAX_HOPS:
            log.info("%s ignoring announce %s with %d hops", self.name, rel, len(hops))
            return
        if not self.scope.can_publish(rel):
            log.info("%s announce outside its publish scope ignored: %s", self.name, rel)
            return
        abs_path = self.scope.absolute(rel)
        old = mine.pop(rel, None)
        if old is None and len(self._published) >= self.limits.max_published:
            log.warning("%s announces more than %d broadcasts; ignoring %s", self.name,
                        self.limits.max_published, rel)
            return
        broadcast = Broadcast(abs_path, self, hops, budget=self.origin.budget,
                              max_cache_age=self.origin.max_cache_age, cost=min(cost + self.link_cost, 2**62 - 1))
        try:
            self.origin.publish(broadcast)
        except LimitExceeded as exc:
            log.warning("%s cannot publish %s: %s", self.name, abs_path, exc)
            if old is not None:
                self._drop(old)
            return
        if old is not None:  # a restart: the new announcement replaces the old one
            self._drop(old)
        mine[rel] = broadcast
        self._published[abs_path] = broadcast
        log.info("%s publishes %s hops=%s", self.name, abs_path, list(hops))

    def _unannounced(self, mine: dict[str, Broadcast], suffix: str, error: int | None = None) -> None:
        broadcast = mine.pop(paths.norm(suffix), None)
        if broadcast is not None:
            self._drop(broadcast, error)
            log.info("%s unpublished %s%s", self.name, broadcast.path, "" if error is None else " (lost)")

    def _drop(self, broadcast: Broadcast, error: int | None = None) -> None:
        self.origin.unpublish(broadcast)
        broadcast.close(error)
        if self._published.get(broadcast.path) is broadcast:
            del self._published[broadcast.path]

    # ------------------------------------------------------------------ upstream (we subscribe)
    def serve_track(self, track: Track) -> Callable[[], None]:
        """TrackSource: pull `track` from this peer with one subscription in our nursery."""
        cancel_scope = trio.CancelScope()
        if not self._spawn(self._pull_track, track, cancel_scope):
            track.close(ErrorCode.CANCEL)
        return cancel_scope.cancel

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        """TrackSource: ask this peer for a track's TRACK_INFO (lite-05+), or the default."""
        if not self.version.has_track_stream:
            return TrackInfo()
        assert self.scope is not None
        broadcast_rel = self.scope.relative(broadcast_path) or ""
        send, recv = await self.transport.open_bi()
        reader = MessageReader(recv, self.limits.max_message + 16)
        try:
            # No FIN before TRACK_INFO arrives: moq-rs 0.4.18 resets a TRACK request whose
            # sender already finished (the spec says "then FIN"; the real client wins).
            await send.write(m.encode_bi_type(m.BiStream.TRACK)
                             + m.TrackRequest(broadcast=broadcast_rel, track=name).encode(self.version))
            info = await reader.message(m.TrackInfoMsg.decode, self.version, self.limits.max_message)
            if info is None:
                raise ProtocolError(ErrorCode.DECODE, "TRACK stream ended without TRACK_INFO")
            await send.finish()
            return TrackInfo(priority=info.priority, ordered=info.ordered,
                             max_latency_ms=info.max_latency_ms, timescale=info.timescale)
        finally:
            recv.stop(ErrorCode.CANCEL)

    async def fetch_group(self, broadcast_path: str, name: str, sequence: int, priority: int = 0):
        """TrackSource: one past group from this peer by FETCH (lite-05+), frames as they come.

        Raises ProtocolError(NOT_FOUND) when the peer cannot serve it."""
        if not self.version.has_fetch:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{self.version.name_str} peers cannot be fetched from")
        assert self.scope is not None
        rel = self.scope.relative(broadcast_path) or ""
        send, recv = await self.transport.open_bi()
        reader = MessageReader(recv, self.limits.max_frame + 64)
        try:
            await send.write(m.encode_bi_type(m.BiStream.FETCH)
                             + m.Fetch(rel, name, priority, sequence).encode(self.version))
            # As with TRACK, moq-rs resets a FETCH whose sender already finished: FIN after.
            timestamp = 0
            while True:
                frame = await reader.frame(self.version, self.limits.max_frame)
                if frame is None:
                    await send.finish()
                    return
                timestamp += frame[0]
                yield Frame(frame[1], timestamp)
        except (StreamEnded, TransportError) as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"upstream fetch failed: {exc}") from exc
        finally:
            recv.stop(ErrorCode.CANCEL)

    async def _pull_track(self, track: Track, cancel_scope: trio.CancelScope) -> None:
        v = self.version
        assert self.scope is not None
        rel = self.scope.relative(track.broadcast_path)
        sub_id = self._next_upstream_id
        self._next_upstream_id += 1
        send: SendStream | None = None
        error: int | None = None
        try:
            with cancel_scope:
                if track.info is None:
                    if v.has_track_stream:
                        with trio.fail_after(self.limits.track_info_timeout):
                            track.set_info(await self.fetch_track_info(track.broadcast_path, track.name))
                    else:
                        track.set_info(TrackInfo())
                self._upstream[sub_id] = track  # registered before SUBSCRIBE (lite §5.5)
                send, recv = await self.transport.open_bi()
                reader = MessageReader(recv, self.limits.max_message + 16)
                # Ask for what the subscribers want, no more (lite §7.1); re-ask as that changes.
                wish = self._upstream_wish(track)
                sub = m.Subscribe(id=sub_id, broadcast=rel or "", track=track.name, priority=wish.priority,
                                  ordered=wish.ordered, max_latency_ms=wish.max_latency_ms,
                                  start_group=wish.start, end_group=wish.end)
                track.asked_upstream(wish.max_latency_ms)
                await send.write(m.encode_bi_type(m.BiStream.SUBSCRIBE) + sub.encode(v))
                log.debug("%s subscribed upstream %s/%s id=%d %s", self.name, track.broadcast_path, track.name,
                          sub_id, wish)
                async with open_nursery() as nursery:
                    if v >= Version.LITE_03:
                        nursery.start_soon(self._forward_demand, track, send, wish)
                    while True:
                        reply = await reader.subscribe_response(v, self.limits.max_message)
                        if reply is None:
                            break
                        if isinstance(reply, m.SubscribeEnd):
                            track.end(reply.group)
                        # OK and DROP need no action: groups tell us everything else.
                    nursery.cancel_scope.cancel()
        except trio.Cancelled:
            # The session is going away (our own unsubscribe is absorbed by cancel_scope):
            # groups still open upstream will never finish, so readers must see them aborted.
            error = ErrorCode.CANCEL
            raise
        except trio.TooSlowError:
            log.info("%s no TRACK_INFO for %s/%s", self.name, track.broadcast_path, track.name)
            error = ErrorCode.TIMEOUT
        except StreamReset as exc:
            log.info("%s upstream refused %s/%s (code %s)", self.name, track.broadcast_path, track.name, exc.code)
            error = ErrorCode.NOT_FOUND
        except (StreamEnded, SessionClosed):
            error = ErrorCode.CANCEL
        except ProtocolError as exc:
            log.info("%s upstream subscription error: %s", self.name, exc)
            error = exc.code
        finally:
            if send is not None:
                if error is None:
                    # Unsubscribe, or answering the publisher's FIN = FIN our side (lite §4.3).
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        try:
                            await send.finish()
                        except TransportError:
                            pass
                else:
                    send.reset(ErrorCode.CANCEL)
            self._upstream.pop(sub_id, None)
            track.close(error)

    def _upstream_wish(self, track: Track) -> Wish:
        """The track's demand as this peer's version can carry it, within the publisher's window."""
        wish = track.demand.combined or Wish()
        if self.version < Version.LITE_03:
            return Wish(priority=wish.priority)  # only the priority is on the wire (max latency 0)
        latency = wish.max_latency_ms
        if self.version.has_track_stream and track.info is not None:
            # Nobody can wait for a group longer than the publisher keeps it (TRACK_INFO).
            latency = min(latency, track.info.max_latency_ms)
        # Asked for max latency 0, the Rust publisher sometimes ends a group early when the next
        # one starts and FINs it as if it were whole (seen with moq-rs 0.5.1 on lite-03..06); at 1 ms
        # it never did, while still skipping stale groups as 0 would. So 0 is asked as 1.
        return dataclasses.replace(wish, max_latency_ms=max(latency, MIN_UPSTREAM_LATENCY_MS))

    async def _forward_demand(self, track: Track, send: SendStream, asked: Wish) -> None:
        """SUBSCRIBE_UPDATE upstream whenever the combined demand changes (lite-03+)."""
        while True:
            await track.demand.changed()
            if not len(track.demand):
                continue  # the last reader left: the subscription itself is about to end
            wish = self._upstream_wish(track)
            if wish == asked:
                continue
            update = m.SubscribeUpdate(priority=wish.priority, ordered=wish.ordered,
                                       max_latency_ms=wish.max_latency_ms, start_group=wish.start,
                                       end_group=wish.end)
            track.asked_upstream(wish.max_latency_ms)
            try:
                await send.write(update.encode(self.version))
            except TransportError:
                return  # the subscription is ending; its reply loop sees why
            log.debug("%s updated upstream %s/%s: %s", self.name, track.broadcast_path, track.name, wish)
            asked = wish

    async def _recv_group(self, reader: MessageReader, recv: RecvStream) -> None:
        v = self.version
        header = await reader.message(m.GroupHeader.decode, v, self.limits.max_message)
        if header is None:
            return
        track = self._upstream.get(header.subscribe_id)
        if track is None:
            recv.stop(ErrorCode.CANCEL)
            return
        group = track.create_group(header.sequence)
        if group is None:
            recv.stop(ErrorCode.OLD)
            return
        timestamp = 0
        try:
            while True:
                frame = await reader.frame(v, self.limits.max_frame)
                if frame is None:
                    break
                delta, payload = frame
                timestamp += delta
                group.append(Frame(payload, timestamp))
            if track.maybe_cut_short(group):
                # Possibly truncated by the publisher (see Track.maybe_cut_short): never let it
                # look complete to anyone.
                log.debug("%s group %d of %s/%s ended stale: dropped", self.name, group.sequence,
                          track.broadcast_path, track.name)
                group.abort(ErrorCode.OLD)
                track.discard(group)
            else:
                group.finish()
        except TooLarge as exc:
            group.abort(ErrorCode.FRAME_TOO_LARGE)
            recv.stop(ErrorCode.FRAME_TOO_LARGE)
            log.info("%s %s", self.name, exc)
        except StreamReset as exc:
            group.abort(exc.code if exc.code is not None else ErrorCode.CANCEL)
        except (ProtocolError, StreamEnded, SessionClosed):
            group.abort(ErrorCode.CANCEL)
            raise

    # ------------------------------------------------------------------ downstream (peer subscribes)
    def _lookup(self, broadcast_rel: str) -> Broadcast | None:
        assert self.scope is not None
        rel = paths.norm(broadcast_rel)
        if not self.scope.can_subscribe(rel):
            return None
        broadcast = self.origin.best(self.scope.absolute(rel), self.peer_hop or None)
        if broadcast is None or broadcast.source is self:
            return None
        return broadcast

    async def _serve_track(self, send: SendStream, reader: MessageReader) -> None:
        v = self.version
        request = await reader.message(m.TrackRequest.decode, v, self.limits.max_message)
        if request is None:
            return
        broadcast = self._lookup(request.broadcast)
        if broadcast is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no broadcast {request.broadcast!r}")
        info = await self._track_info(broadcast, request.track)
        await send.write(m.TrackInfoMsg(priority=info.priority, ordered=info.ordered,
                                        max_latency_ms=info.max_latency_ms,
                                        timescale=info.timescale).encode(v))
        await send.finish()

    async def _track_info(self, broadcast: Broadcast, name: str) -> TrackInfo:
        """The publisher's TRACK_INFO, asked upstream at most once per track and cached."""
        try:
            with trio.fail_after(self.limits.track_info_timeout):
                return await broadcast.track_info(name)
        except trio.TooSlowError as exc:
            raise ProtocolError(ErrorCode.TIMEOUT, f"no TRACK_INFO for {name!r}") from exc
        except (StreamReset, SessionClosed, StreamEnded, ProtocolError, TrackClosed, LimitExceeded) as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no track {name!r}: {exc}") from exc

    async def _serve_subscribe(self, send: SendStream, recv: RecvStream, reader: MessageReader) -> None:
        v = self.version
        sub = await reader.message(m.Subscribe.decode, v, self.limits.max_message)
        if sub is None:
            return
        if sub.id in self._subscriptions:
            raise ProtocolError(ErrorCode.DUPLICATE, f"subscribe id {sub.id} reused")
        if len(self._subscriptions) >= self.limits.max_subscriptions:
            raise ProtocolError(ErrorCode.BOUNDS_EXCEEDED, "too many subscriptions")
        broadcast = self._lookup(sub.broadcast)
        if broadcast is None:
            log.info("%s subscribe to unknown %s/%s", self.name, sub.broadcast, sub.track)
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no broadcast {sub.broadcast!r}")
        self._subscriptions.add(sub.id)
        try:
            with contextlib.ExitStack() as routes:
                subscription = routes.enter_context(broadcast.subscribe(sub.track, _wish(sub, v)))
                state = _Downstream(self, sub, send, subscription, routes, broadcast)
                await state.run(reader)
        except (TrackClosed, LimitExceeded) as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, str(exc)) from exc
        finally:
            self._subscriptions.discard(sub.id)

    async def _serve_fetch(self, send: SendStream, reader: MessageReader) -> None:
        v = self.version
        fetch = await reader.message(m.Fetch.decode, v, self.limits.max_message)
        if fetch is None:
            return
        broadcast = self._lookup(fetch.broadcast)
        if broadcast is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no broadcast {fetch.broadcast!r}")
        group = broadcast.cached_group(fetch.track, fetch.group)
        if group is not None:
            frames = group.frames_from(0)
        else:
            # Not cached here: ask the publisher once, stream its answer through (lite §7.4).
            frames = broadcast.source.fetch_group(broadcast.path, fetch.track, fetch.group, fetch.priority)
        start = getattr(fetch, "start_frame", 0) or 0
        end = getattr(fetch, "end_frame", 0) or 0
        previous = 0
        index = 0
        try:
            async with contextlib.aclosing(frames):  # closed here even when we stop early
                async for frame in frames:
                    if index >= start and (end == 0 or index < end):
                        await send.write(m.frame_header(v, frame.timestamp - previous, len(frame.payload)))
                        await send.write(frame.payload)
                        previous = frame.timestamp
                    index += 1
                    if end and index >= end:
                        break
        except GroupAborted as exc:
            send.reset(exc.code)
            return
        await send.finish()


def _ignore_body(body: bytes, version: Version) -> bytes:
    return body


@dataclass
class LegacySetup:
    """The outcome of the in-band SETUP (lite §3.5): the version and the open session stream."""

    version: Version
    path: str | None
    send: SendStream
    reader: MessageReader
    params_encoding: legacy.LegacyParams = legacy.LegacyParams.KVP


async def negotiate_legacy(transport: TransportSession, allowed: list[Version], timeout: float = 10.0) -> LegacySetup:
    """Serve the legacy CLIENT_SETUP on the client's first bidi stream; reply SERVER_SETUP.

    Both parameter encodings are read (`legacy.LegacyParams`: moq-rs's draft-14 pairs, the
    seed-era JS client's id-length-value); our SERVER_SETUP carries no parameters, which both
    read alike. Raises ProtocolError (VERSION when nothing matches, DECODE for bad or truncated
    bytes) or TooSlowError."""
    info = transport.info
    with trio.fail_after(timeout):
        send, recv = await transport.accept_bi()
        reader = MessageReader(recv, 1 << 16)
        try:
            head = await reader.exact(3)
            if head[0] != legacy.LEGACY_CLIENT_SETUP:
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"expected CLIENT_SETUP, got type {head[0]:#x}")
            size = int.from_bytes(head[1:3], "big")
            setup = legacy.LegacyClientSetup.decode(await reader.exact(size))
        except StreamEnded as exc:
            raise ProtocolError(ErrorCode.DECODE, f"CLIENT_SETUP truncated: {exc}") from exc
    offered = [hex(v) for v in setup.versions]
    for code in setup.versions:
        version = Version.from_setup_code(code)
        if version is not None and version in allowed:
            log.info("conn=%s %s legacy CLIENT_SETUP offers %s (%s parameters): %s", info.conn_id,
                     info.transport, offered, setup.params_encoding.value, version.name_str)
            await send.write(legacy.LegacyServerSetup(version.setup_code).encode())
            return LegacySetup(version, setup.path, send, reader, setup.params_encoding)
    raise ProtocolError(ErrorCode.VERSION, f"no common version in {offered}")


class _Downstream:
    """One peer subscription: picks groups from the shared track and sends each on its own stream."""

    def __init__(self, session: LiteSession, sub: m.Subscribe, send: SendStream, subscription: Subscription,
                 routes: contextlib.ExitStack, broadcast: Broadcast) -> None:
        self.session = session
        self.sub = sub
        self.send = send
        # Our hold on the shared track; its wish (priority, max latency, range) is part of the
        # track's demand, which the upstream subscription carries to the publisher.
        self.subscription = subscription
        self.track = subscription.track
        # Failover (relay spec §10.3): when the route we pull over goes away while another
        # route of the same path is live, the subscription moves there without the peer noticing.
        self.routes = routes
        self.broadcast = broadcast
        self.failovers = 0
        self.last_sequence: int | None = None  # the newest group we started sending
        self.version = session.version
        self.ok_sent = False
        self.started = 0  # group streams opened
        self.inflight: dict[int, trio.CancelScope] = {}
        self._write_lock = trio.Lock()
        self.unsubscribed = False
        self.cancel_code = ErrorCode.OLD  # why an in-flight group stream is reset

    @property
    def wish(self) -> Wish:
        return self.subscription.wish

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            await self.send.write(data)

    async def run(self, reader: MessageReader) -> None:
        v = self.version
        if not v.has_subscribe_start:
            # lite-03/04 (and 01/02) expect SUBSCRIBE_OK at once.
            await self._write(m.SubscribeOk(priority=self.wish.priority, ordered=self.wish.ordered).encode(v))
            self.ok_sent = True
        transport = self.session.transport
        listener = None
        if v.has_datagrams and transport.max_datagram_size > 0:
            sub_id = self.sub.id

            def listener(sequence: int, timestamp: int, payload: bytes) -> None:
                end = self.wish.end
                if end is None or sequence < end:
                    transport.send_datagram(m.Datagram(sub_id, sequence, timestamp, payload).encode())

            self.track.add_datagram_listener(listener)
        try:
            async with open_nursery() as nursery:
                nursery.start_soon(self._read_updates, reader, nursery.cancel_scope)
                await self._fan_out()
                while not self.unsubscribed:
                    old = self.track
                    if not self._fail_over():
                        break
                    if listener is not None:
                        old.remove_datagram_listener(listener)
                        self.track.add_datagram_listener(listener)
                    await self._fan_out()
                nursery.cancel_scope.cancel()
        finally:
            if listener is not None:
                self.track.remove_datagram_listener(listener)
        if self.unsubscribed:
            # The peer FINed (or reset) its side: FIN ours back, without waiting long.
            with trio.move_on_after(1):
                try:
                    await self.send.finish()
                except TransportError:
                    pass
            return
        # The track is over: say where it ended (05+), then FIN.
        log.debug("%s subscription %d to %s/%s ends", self.session.name, self.sub.id,
                  self.track.broadcast_path, self.track.name)
        if not v.has_subscribe_start and self.track.error is not None:
            # lite-03/04 have no SUBSCRIBE_END, and moq-rs keeps waiting after a FIN there:
            # a publisher that vanished is signalled as an aborted subscription.
            self.send.reset(self.track.error)
            return
        if v.has_subscribe_start:
            end = self.track.end_sequence
            if end is None:
                latest = self.track.latest
                end = latest.sequence + 1 if latest is not None else 0
            await self._write(m.SubscribeEnd(group=end).encode(v))
        await self.send.finish()

    async def _read_updates(self, reader: MessageReader, cancel: trio.CancelScope) -> None:
        """SUBSCRIBE_UPDATE changes preferences; FIN or reset means unsubscribe."""
        try:
            while True:
                update = await reader.message(m.SubscribeUpdate.decode, self.version,
                                              self.session.limits.max_message)
                if update is None:
                    break
                # The new preferences apply to groups not yet started, and join the track's
                # demand (the upstream subscription follows with its own SUBSCRIBE_UPDATE).
                self.subscription.update(Wish(priority=update.priority, ordered=update.ordered,
                                              max_latency_ms=update.max_latency_ms,
                                              start=update.start_group, end=update.end_group))
        except ProtocolError as exc:
            log.info("%s bad SUBSCRIBE_UPDATE: %s", self.session.name, exc)
        except (StreamEnded, TransportError):
            pass
        # Unsubscribed: stop sending groups (their streams are reset with Cancel).
        self.unsubscribed = True
        self.cancel_code = ErrorCode.CANCEL
        for scope in self.inflight.values():
            scope.cancel()
        cancel.cancel()

    def _fail_over(self) -> bool:
        """The track ended: if its route went away and another is live, continue over that one."""
        if not self.broadcast.closed or self.failovers >= MAX_FAILOVERS:
            return False  # the publisher ended the track itself (or we have moved too often)
        nxt = self.session._lookup(self.sub.broadcast)
        if nxt is None or nxt is self.broadcast:
            return False
        # Only another path to the same publisher (the first hop is the publisher's origin id)
        # continues our group numbering; another publisher of the path starts its own.
        first = self.broadcast.hops[0] if self.broadcast.hops else 0
        if not first or not nxt.hops or nxt.hops[0] != first:
            return False
        try:
            subscription = self.routes.enter_context(nxt.subscribe(self.sub.track, self.wish))
        except (TrackClosed, LimitExceeded):
            return False
        self.failovers += 1
        self.session.failovers_total += 1
        log.info("%s subscription %d to %s/%s fails over to hops=%s after group %s", self.session.name,
                 self.sub.id, nxt.path, self.sub.track, list(nxt.hops), self.last_sequence)
        self.broadcast, self.subscription, self.track = nxt, subscription, subscription.track
        return True

    def _first_candidates(self) -> tuple[int, int | None, list[Group]]:
        """(arrival cursor, lowest group wanted, cached groups to consider) as the subscription starts."""
        track = self.track
        cursor, cached = track.cached_in_arrival_order()
        floor = self.wish.start
        if self.last_sequence is not None:
            # After a failover: continue after the last group sent (older ones the new route
            # replays from its cache are skipped).
            floor = self.last_sequence + 1
        elif self.version.start_is_lower_bound:
            floor = floor or 0  # lite-06: a plain lower bound; every cached group still fresh
        elif floor is None:
            # lite-01..05 without a start: the latest group, or the first one produced.
            latest = track.latest
            return cursor, (latest.sequence if latest is not None else None), [latest] if latest else []
        return cursor, floor, [g for g in cached if g.sequence >= floor]

    def _worth_starting(self, group: Group, floor: int | None) -> bool:
        """Decided when the group would start: still cached, in range, and not stale (lite §7.3)."""
        track = self.track
        if track.groups.get(group.sequence) is not group:
            return False  # evicted meanwhile
        if floor is not None and group.sequence < floor:
            return False
        end = self.wish.end
        if end is not None and group.sequence >= end:
            return False
        return not track.stale(group, self.wish.max_latency_ms)

    async def _fan_out(self) -> None:
        track = self.track
        cursor, floor, pending = self._first_candidates()
        async with open_nursery() as nursery:
            while True:
                cursor, new = track.arrivals_since(cursor)
                if new and floor is None:
                    floor = new[0].sequence  # "latest" with nothing cached: the first produced
                pending.extend(new)
                self._expire()
                # Every start awaits (stream credit, the send buffer), so what is worth starting is
                # decided again each time from what is waiting now: with several groups waiting and
                # max latency 0 only the newest starts; otherwise the fresh ones, oldest first.
                pending = [g for g in pending if self._worth_starting(g, floor)]
                if pending and (not self.started or not self.wish.max_latency_ms) and \
                        (hold := track.settling(first=not self.started)) > 0:
                    # Let a burst land before choosing (Track.settling): the first group, and every
                    # group for a subscriber that wants only the newest.
                    with trio.move_on_after(hold):
                        await track.wait_changed()
                    continue
                if pending:
                    group = min(pending, key=lambda g: g.sequence)
                    pending.remove(group)
                    if await self._start_group(nursery, group) and self.started == 1:
                        # Nothing below the first group delivered (SUBSCRIBE_START's promise): a
                        # straggler older than it is not sent.
                        floor = group.sequence if floor is None else max(floor, group.sequence)
                    continue
                if track.closed:
                    break
                end = self.wish.end
                if end is not None and track.latest is not None and track.latest.sequence + 1 >= end \
                        and not self.inflight:
                    break
                await track.wait_changed()

    def _expire(self) -> None:
        """In-flight groups that went stale are not worth finishing: reset them (code Old)."""
        track = self.track
        latest = track.latest
        if latest is None or not self.inflight:
            return
        for seq, scope in list(self.inflight.items()):
            group = track.groups.get(seq)
            if seq < latest.sequence and (group is None or track.stale(group, self.wish.max_latency_ms)):
                scope.cancel()

    async def _start_group(self, nursery: trio.Nursery, group: Group) -> bool:
        """Open the group's stream and hand it to a sender task; False if it could not start."""
        if len(self.inflight) >= self.session.limits.max_inflight_groups:
            oldest = min(self.inflight)
            if oldest > group.sequence:
                return False
            self.inflight.pop(oldest).cancel()
        if not self.ok_sent:
            # lite-05/06: SUBSCRIBE_OK names the first group delivered, just before its stream.
            await self._write(m.SubscribeStart(group=group.sequence).encode(self.version))
            self.ok_sent = True
        # Open the stream and send its header here, in order: groups then leave in sequence
        # order on every transport (one TCP stream for WebSocket), and a client reading in
        # sequence order does not skip an older group that merely lost a scheduling race.
        try:
            stream = await self.session.transport.open_uni()
            stream.set_priority(_send_order(self.wish.priority, group.sequence))
            await stream.write(m.encode_uni_type(m.UniStream.GROUP)
                               + m.GroupHeader(subscribe_id=self.sub.id, sequence=group.sequence).encode(self.version))
        except TransportError:
            return False
        scope = trio.CancelScope()
        self.inflight[group.sequence] = scope
        self.started += 1
        if self.last_sequence is None or group.sequence > self.last_sequence:
            self.last_sequence = group.sequence
        nursery.start_soon(self._send_group, group, scope, stream)
        return True

    async def _send_group(self, group, scope: trio.CancelScope, stream: SendStream) -> None:
        v = self.version
        try:
            with scope:
                previous = 0
                stamped = v.has_timestamps
                async for frame in group.frames_from(0):
                    # Every subscriber sends the group from its first frame, so the header (with
                    # its delta from the previous frame) is the same for all: encode it once.
                    header = frame.header_ts if stamped else frame.header_plain
                    if header is None:
                        header = m.frame_header(v, frame.timestamp - previous, len(frame.payload))
                        if stamped:
                            frame.header_ts = header
                        else:
                            frame.header_plain = header
                    await stream.write(header)
                    if frame.payload:
                        await stream.write(frame.payload)
                    previous = frame.timestamp
                await stream.finish()
            if scope.cancelled_caught:
                stream.reset(self.cancel_code)
        except GroupAborted as exc:
            stream.reset(exc.code)
        except TransportError:
            pass
        finally:
            if self.inflight.get(group.sequence) is scope:
                del self.inflight[group.sequence]


MAX_FAILOVERS = 64  # route changes one subscription follows before it simply ends
MIN_UPSTREAM_LATENCY_MS = 1  # see LiteSession._upstream_wish


def _wish(sub: m.Subscribe, v: Version) -> Wish:
    """What a SUBSCRIBE asks for. lite-01/02 carry no max latency: like the Rust stack, read it as
    0 (the newest group only)."""
    return Wish(priority=sub.priority, ordered=sub.ordered,
                max_latency_ms=sub.max_latency_ms if v >= Version.LITE_03 else 0,
                start=sub.start_group, end=sub.end_group)


def _send_order(priority: int, sequence: int) -> int:
    """Higher subscriber priority first, then newer groups (lite §5.5)."""
    return (priority << 24) | (sequence & 0xFFFFFF)


class _AnnounceWriter:
    """Encodes one announce stream's replies for the session's version, remembering what it said."""

    def __init__(self, session: LiteSession, send: SendStream, prefix: str) -> None:
        self.session = session
        self.send = send
        self.prefix = prefix
        self.v = session.version
        self.sent: dict[str, tuple[int, int]] = {}  # suffix -> (broadcast generation, lite-06 id)
        self.next_id = 0
        self.lock = trio.Lock()

    def _suffix(self, abs_path: str) -> str | None:
        scope = self.session.scope
        assert scope is not None
        rel = scope.relative(abs_path)
        return None if rel is None else paths.strip(rel, self.prefix)

    def _hops_out(self, broadcast: Broadcast) -> list[int]:
        hops = list(broadcast.hops)
        if self.v == Version.LITE_04:
            hops.append(self.session.hop_id)  # lite-04 senders stamp themselves
        return hops

    def _active(self, suffix: str, broadcast: Broadcast) -> bytes:
        v = self.v
        if v.has_typed_announce:
            self.sent[suffix] = (broadcast.generation, self.next_id)
            self.next_id += 1
            cost = broadcast.cost
            return m.AnnounceStart(suffix=suffix, hops=list(broadcast.hops), cost=cost, cold_cost=cost).encode(v)
        self.sent[suffix] = (broadcast.generation, 0)
        return m.Announce(active=True, suffix=suffix, hops=self._hops_out(broadcast),
                          hop_count=len(broadcast.hops)).encode(v)

    def _ended(self, suffix: str) -> bytes:
        _, announce_id = self.sent.pop(suffix)
        if self.v.has_typed_announce:
            return m.AnnounceEnd(id=announce_id).encode(self.v)
        return m.Announce(active=False, suffix=suffix, hops=[], hop_count=0).encode(self.v)

    async def initial(self, items: list[tuple[str, Broadcast | None]]) -> None:
        v = self.v
        active = []
        for abs_path, broadcast in items:
            suffix = self._suffix(abs_path)
            if broadcast is not None and suffix is not None and suffix not in self.sent:
                active.append((suffix, broadcast))
        out = bytearray()
        if v.has_announce_ok:
            out += m.AnnounceOk(hop_id=self.session.hop_id, active_count=len(active)).encode(v)
        elif v.has_announce_init:
            out += m.AnnounceInit(suffixes=[s for s, _ in active]).encode(v)
            for suffix, broadcast in active:
                self.sent[suffix] = (broadcast.generation, 0)
            active = []
        for suffix, broadcast in active:
            out += self._active(suffix, broadcast)
        if out:
            async with self.lock:
                await self.send.write(bytes(out))

    async def update(self, items: list[tuple[str, Broadcast | None]]) -> None:
        out = bytearray()
        for abs_path, broadcast in items:
            suffix = self._suffix(abs_path)
            if suffix is None:
                continue
            previous = self.sent.get(suffix)
            if broadcast is None:
                if previous is not None:
                    out += self._ended(suffix)
            elif previous is None:
                out += self._active(suffix, broadcast)
            elif previous[0] != broadcast.generation:
                # Another route took over: end then re-announce (a duplicate active is an error
                # for lite-03/04/06 subscribers).
                out += self._ended(suffix)
                out += self._active(suffix, broadcast)
        if out:
            async with self.lock:
                await self.send.write(bytes(out))


class _multi_watch:
    """Context manager opening one origin watcher per prefix."""

    def __init__(self, origin: Origin, prefixes: list[str], exclude: int | None) -> None:
        self.origin = origin
        self.prefixes = prefixes
        self.exclude = exclude
        self._cms: list = []

    def __enter__(self):
        watchers = []
        for prefix in self.prefixes:
            cm = self.origin.watch(prefix, self.exclude)
            watchers.append(cm.__enter__())
            self._cms.append(cm)
        return watchers

    def __exit__(self, *exc) -> None:
        for cm in reversed(self._cms):
            cm.__exit__(None, None, None)


async def _cancel_on_eof(reader: MessageReader, cancel: trio.CancelScope) -> None:
    """The peer's FIN (or reset) on a request stream ends the transaction."""
    try:
        await reader.wait_eof()
    except (StreamReset, SessionClosed, ProtocolError, StreamEnded):
        pass
    cancel.cancel()

