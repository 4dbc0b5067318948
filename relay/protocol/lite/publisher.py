"""Our side as a publisher: the origin's broadcasts served to the peer (lite §5.2-§5.6).

The peer's announce requests are answered from the origin (only routes it may see), its TRACK
requests with the publisher's TRACK_INFO, its SUBSCRIBEs with a protocol-neutral `Fanout` over
this session's group streams (`LiteGroupSink`), its FETCHes from the cache or the publisher.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from relay.concurrency import open_nursery
from relay.errors import Refused
from relay.model import path as paths
from relay.model.broadcast import Broadcast, LimitExceeded, Subscription
from relay.model.origin import Origin
from relay.model.subscription import Wish
from relay.model.track import Frame, GroupAborted, TrackClosed, TrackInfo
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.version import Version
from relay.relaying.fanout import Fanout, ended_at
from relay.transport.base import JOIN_BELOW, SendStream, SessionClosed, StreamReset, TransportError

if TYPE_CHECKING:
    from relay.protocol.lite.session import LiteSession

log = logging.getLogger("relay.session")


class LitePublisher:
    """What the peer asks of us: announcements, track info, subscriptions, fetches."""

    def __init__(self, session: LiteSession) -> None:
        self.session = session
        self.subscriptions: set[int] = set()  # the peer's subscribe ids in use
        self.announce_streams = 0
        # For a grant re-checked in place (rescoped): the live subscriptions, and each announce
        # stream's watchers and writer.
        self.live: dict[int, _Live] = {}
        self.announcing: list[tuple[list, _AnnounceWriter]] = []

    # ------------------------------------------------------------------ a changed grant
    def revoke_outside(self) -> None:
        """The session's scope changed: subscriptions it no longer allows end (Unauthorized)."""
        scope = self.session.scope
        assert scope is not None
        for sub_id, live in list(self.live.items()):
            if not live.revoked and not scope.can_subscribe(live.rel):
                log.info("%s subscription %d to %s is no longer granted; ending it", self.session.name, sub_id, live.rel)
                live.revoked = True
                if live.fanout is not None:
                    live.fanout.unsubscribe()

    async def reannounce(self) -> None:
        """Each announce stream says what the changed scope shows and hides now."""
        for watchers, writer in list(self.announcing):
            snapshot = [item for watcher in watchers for item in watcher.current()]
            shown = {p for p, _ in snapshot}
            hidden = [(abs_path, None) for abs_path in writer.sent_paths() if abs_path not in shown]
            try:
                await writer.update([(p, self._visible(p, b)) for p, b in snapshot] + hidden)
            except TransportError:
                pass  # that stream is going away; its own task ends it

    # ------------------------------------------------------------------ announcements out
    def _visible(self, abs_path: str, broadcast: Broadcast | None) -> Broadcast | None:
        """The route the peer may see for `abs_path`, or None."""
        s = self.session
        if broadcast is None or broadcast.source is self.session.subscriber:
            return None
        assert s.scope is not None
        if not s.scope.can_see(abs_path):  # a reserved prefix the peer's grants do not name
            return None
        if s.peer_hop and s.peer_hop in broadcast.hops:
            return None
        if len(broadcast.hops) >= m.MAX_HOPS:
            return None
        return broadcast

    async def serve_announce(self, send: SendStream, reader: MessageReader, request: m.AnnounceRequest) -> None:
        s = self.session
        if self.announce_streams >= s.limits.max_announce_streams:
            raise Refused(ErrorCode.BOUNDS_EXCEEDED, "too many announce streams")
        self.announce_streams += 1
        try:
            prefix = paths.norm(request.prefix)
            exclude = request.exclude_hop or self.session.peer_hop or None
            assert s.scope is not None
            watch_rel = s.scope.watch_prefixes(prefix)
            writer = _AnnounceWriter(self.session, send, prefix)
            prefixes = [s.scope.absolute(w) for w in watch_rel]
            entry = ([], writer)
            try:
                with _multi_watch(s.origin, prefixes, exclude) as watchers:
                    async with open_nursery() as nursery:
                        nursery.start_soon(_cancel_on_eof, reader, nursery.cancel_scope)
                        snapshot = []
                        for watcher in watchers:
                            snapshot.extend(watcher.snapshot())
                        await writer.initial([(p, self._visible(p, b)) for p, b in snapshot])
                        entry[0].extend(watchers)
                        self.announcing.append(entry)  # a changed grant re-reads these (reannounce)
                        for watcher in watchers:
                            nursery.start_soon(self._pump_announces, watcher, writer)
            finally:
                if entry in self.announcing:
                    self.announcing.remove(entry)
            await send.finish()
        finally:
            self.announce_streams -= 1

    async def _pump_announces(self, watcher, writer: _AnnounceWriter) -> None:
        while True:
            changes = await watcher.changes()
            await writer.update([(p, self._visible(p, b)) for p, b in changes])

    def lookup(self, broadcast_rel: str) -> Broadcast | None:
        s = self.session
        assert s.scope is not None
        rel = paths.norm(broadcast_rel)
        if not s.scope.can_subscribe(rel):
            return None
        broadcast = s.origin.best(s.scope.absolute(rel), s.peer_hop or None)
        if broadcast is None or broadcast.source is self.session.subscriber:
            return None
        return broadcast

    async def serve_track_info(self, send: SendStream, reader: MessageReader, request: m.TrackRequest) -> None:
        v = self.session.version
        broadcast = self.lookup(request.broadcast)
        if broadcast is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no broadcast {request.broadcast!r}")
        info = await self._track_info(broadcast, request.track)
        await send.write(m.TrackInfoMsg(priority=info.priority, ordered=info.ordered,
                                        max_latency_ms=info.max_latency_ms,
                                        timescale=info.timescale).encode(v))
        await send.finish()

    async def _track_info(self, broadcast: Broadcast, name: str) -> TrackInfo:
        """The publisher's TRACK_INFO, asked upstream at most once per track and cached."""
        s = self.session
        try:
            with trio.fail_after(s.limits.track_info_timeout):
                return await broadcast.track_info(name)
        except trio.TooSlowError as exc:
            raise Refused(ErrorCode.TIMEOUT, f"no TRACK_INFO for {name!r}") from exc
        except (StreamReset, SessionClosed, StreamEnded, ProtocolError, TrackClosed, LimitExceeded) as exc:
            raise Refused(ErrorCode.NOT_FOUND, f"no track {name!r}: {exc}") from exc

    async def serve_subscribe(self, send: SendStream, reader: MessageReader, sub: m.Subscribe) -> None:
        s = self.session
        v = s.version
        if sub.id in self.subscriptions:
            raise ProtocolError(ErrorCode.DUPLICATE, f"subscribe id {sub.id} reused")
        if len(self.subscriptions) >= s.limits.max_subscriptions:
            raise Refused(ErrorCode.BOUNDS_EXCEEDED, "too many subscriptions")
        broadcast = self.lookup(sub.broadcast)
        if broadcast is None:
            log.info("%s subscribe to unknown %s/%s", s.name, sub.broadcast, sub.track)
            raise Refused(ErrorCode.NOT_FOUND, f"no broadcast {sub.broadcast!r}")
        self.subscriptions.add(sub.id)
        live = self.live[sub.id] = _Live(paths.norm(sub.broadcast))
        try:
            with contextlib.ExitStack() as routes:
                hold = routes.enter_context(contextlib.ExitStack())  # this route's share (Fanout.hold)
                subscription = hold.enter_context(broadcast.subscribe(sub.track, _wish(sub, v), viewer=s))
                await self._run_subscription(sub, send, reader, subscription, broadcast, routes, hold, live)
        except TrackClosed as exc:
            raise Refused(ErrorCode.NOT_FOUND, str(exc)) from exc
        except LimitExceeded as exc:
            raise Refused(ErrorCode.BOUNDS_EXCEEDED, str(exc)) from exc
        finally:
            self.subscriptions.discard(sub.id)
            self.live.pop(sub.id, None)

    async def _run_subscription(self, sub: m.Subscribe, send: SendStream, reader: MessageReader,
                                subscription: Subscription, broadcast: Broadcast,
                                routes: contextlib.ExitStack, hold: contextlib.ExitStack, live: _Live) -> None:
        """One peer subscription: its responses on the subscribe stream, its groups by the fan-out."""
        s = self.session
        v = s.version
        sink = LiteGroupSink(s, sub.id, send)
        if not v.has_subscribe_start:
            # lite-01..04 expect SUBSCRIBE_OK at once.
            await sink.reply(m.SubscribeOk(priority=subscription.wish.priority,
                                           ordered=subscription.wish.ordered).encode(v))
        listener = None
        if v.has_datagrams and s.transport.max_datagram_size > 0:
            transport = s.transport

            def listener(sequence: int, timestamp: int, payload: bytes) -> None:
                end = fanout.wish.end
                if end is None or sequence < end:
                    transport.send_datagram(m.Datagram(sub.id, sequence, timestamp, payload).encode())

        def count_failover() -> None:
            s.failovers_total += 1

        fanout = Fanout(subscription, broadcast, sink, routes=routes, lookup=lambda: self.lookup(sub.broadcast),
                        max_inflight=s.limits.max_inflight_groups, name=f"{s.name} subscription {sub.id}",
                        start_is_lower_bound=v.start_is_lower_bound, datagrams=listener,
                        on_failover=count_failover, hold=hold,
                        route_changes=lambda: s.origin.route_changed(broadcast.path))
        live.fanout = fanout
        async with open_nursery() as nursery:
            nursery.start_soon(self._read_updates, reader, fanout, nursery.cancel_scope)
            await fanout.run()
            nursery.cancel_scope.cancel()
        if live.revoked:
            raise Refused(ErrorCode.UNAUTHORIZED, f"{live.rel} is no longer granted")
        if fanout.unsubscribed:
            # The peer FINed (or reset) its side: FIN ours back, without waiting long.
            with trio.move_on_after(1):
                try:
                    await send.finish()
                except TransportError:
                    pass
            return
        track = fanout.track
        log.debug("%s subscription %d to %s/%s ends", s.name, sub.id, track.broadcast_path, track.name)
        if not v.has_subscribe_start and track.error is not None:
            # lite-03/04 have no SUBSCRIBE_END, and moq-rs keeps waiting after a FIN there:
            # a publisher that vanished is signalled as an aborted subscription.
            send.reset(track.error)
            return
        if v.has_subscribe_start:
            # The track is over: say where it ended, then FIN.
            await sink.reply(m.SubscribeEnd(group=ended_at(track)).encode(v))
        await send.finish()

    async def _read_updates(self, reader: MessageReader, fanout: Fanout, cancel: trio.CancelScope) -> None:
        """SUBSCRIBE_UPDATE changes preferences; FIN or reset means unsubscribe."""
        s = self.session
        try:
            while True:
                update = await reader.message(m.SubscribeUpdate.decode, s.version, s.limits.max_message)
                if update is None:
                    break
                # The new preferences apply to groups not yet started, and join the track's
                # demand (the upstream subscription follows with its own SUBSCRIBE_UPDATE).
                fanout.subscription.update(Wish(priority=update.priority, ordered=update.ordered,
                                                max_latency_ms=update.max_latency_ms,
                                                start=update.start_group, end=update.end_group))
        except ProtocolError as exc:
            log.info("%s bad SUBSCRIBE_UPDATE: %s", s.name, exc)
        except (StreamEnded, TransportError):
            pass
        fanout.unsubscribe()  # its group streams are reset with Cancel
        cancel.cancel()


    async def serve_fetch(self, send: SendStream, reader: MessageReader, fetch: m.Fetch) -> None:
        v = self.session.version
        broadcast = self.lookup(fetch.broadcast)
        if broadcast is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no broadcast {fetch.broadcast!r}")
        # From the cache, else asked of the publisher once and streamed through (lite §7.4).
        frames = broadcast.fetch_group(fetch.track, fetch.group, fetch.priority)
        start, end = fetch.start_frame, fetch.end_frame
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




class _Live:
    """One live subscription, as a changed grant sees it."""

    __slots__ = ("rel", "fanout", "revoked")

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.fanout: Fanout | None = None
        self.revoked = False


class LiteGroupSink:
    """The fan-out's groups as this session's group streams (lite §5.5), and the subscribe stream's
    responses, written one at a time."""

    def __init__(self, session: LiteSession, subscribe_id: int, send: SendStream) -> None:
        self.session = session
        self.subscribe_id = subscribe_id
        self.send = send
        self._lock = trio.Lock()

    async def reply(self, data: bytes) -> None:
        async with self._lock:
            await self.send.write(data)

    async def first_group(self, sequence: int) -> None:
        if self.session.version.has_subscribe_start:
            # lite-05/06: SUBSCRIBE_OK names the first group delivered, just before its stream.
            await self.reply(m.SubscribeStart(group=sequence).encode(self.session.version))

    async def open_group(self, sequence: int, priority: int) -> LiteGroupStream:
        v = self.session.version
        stream = await self.session.transport.open_uni()
        stream.set_priority(_send_order(priority, sequence))
        await stream.write(m.encode_uni_type(m.UniStream.GROUP)
                           + m.GroupHeader(subscribe_id=self.subscribe_id, sequence=sequence).encode(v))
        return LiteGroupStream(stream, v)


class LiteGroupStream:
    """One group stream: FRAMEs (lite-05+ with timestamp deltas), then FIN."""

    __slots__ = ("stream", "stamped", "version")

    def __init__(self, stream: SendStream, version: Version) -> None:
        self.stream = stream
        self.version = version
        self.stamped = version.has_timestamps

    async def write(self, frame: Frame, previous_timestamp: int) -> None:
        # Every subscriber sends a group from its first frame, so a frame's header (with its delta
        # from the previous frame) is the same for all: it is encoded once and kept on the frame.
        header = frame.header_ts if self.stamped else frame.header_plain
        if header is None:
            header = m.frame_header(self.version, frame.timestamp - previous_timestamp, len(frame.payload))
            if self.stamped:
                frame.header_ts = header
            else:
                frame.header_plain = header
        payload = frame.payload
        if len(payload) <= JOIN_BELOW:
            await self.stream.write(header + payload)
        else:
            await self.stream.write(header)
            await self.stream.write(payload)

    async def finish(self) -> None:
        await self.stream.drain()  # until then the fan-out may still abort the group
        await self.stream.finish()

    def abort(self, code: int) -> None:
        self.stream.reset(code)


def _wish(sub: m.Subscribe, v: Version) -> Wish:
    """What a SUBSCRIBE asks for. lite-01/02 carry no max latency: like the Rust stack, read it as
    0 (the newest group only)."""
    return Wish(priority=sub.priority, ordered=sub.ordered,
                max_latency_ms=sub.max_latency_ms if v >= Version.LITE_03 else 0,
                start=sub.start_group, end=sub.end_group)


def _send_order(priority: int, sequence: int) -> int:
    """Higher subscriber priority first, then newer groups (lite §5.5)."""
    return (priority << 24) | (sequence & 0xFFFFFF)


@dataclass(frozen=True, slots=True)
class _Sent:
    """What an announce stream said of one suffix: which route (its generation), under which
    lite-06 id, and the publisher it leads to (the first hop, 0 when unknown)."""

    generation: int
    announce_id: int
    publisher: int

    @classmethod
    def of(cls, broadcast: Broadcast, announce_id: int) -> _Sent:
        return cls(broadcast.generation, announce_id, broadcast.hops[0] if broadcast.hops else 0)


class _AnnounceWriter:
    """Encodes one announce stream's replies for the session's version, remembering what it said."""

    def __init__(self, session: LiteSession, send: SendStream, prefix: str) -> None:
        self.session = session
        self.send = send
        self.prefix = prefix
        self.v = session.version
        self.sent: dict[str, _Sent] = {}
        self.next_id = 0
        self.lock = trio.Lock()

    def sent_paths(self) -> list[str]:
        """The absolute paths announced active on this stream."""
        scope = self.session.scope
        assert scope is not None
        return [scope.absolute(paths.join(self.prefix, suffix)) for suffix in self.sent]

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
            self.sent[suffix] = _Sent.of(broadcast, self.next_id)
            self.next_id += 1
            cost = broadcast.cost
            return m.AnnounceStart(suffix=suffix, hops=list(broadcast.hops), cost=cost, cold_cost=cost).encode(v)
        self.sent[suffix] = _Sent.of(broadcast, 0)
        return m.Announce(active=True, suffix=suffix, hops=self._hops_out(broadcast),
                          hop_count=len(broadcast.hops)).encode(v)

    def _ended(self, suffix: str) -> bytes:
        announce_id = self.sent.pop(suffix).announce_id
        if self.v.has_typed_announce:
            return m.AnnounceEnd(id=announce_id).encode(self.v)
        return m.Announce(active=False, suffix=suffix, hops=[], hop_count=0).encode(self.v)

    def _rerouted(self, suffix: str, broadcast: Broadcast, previous: _Sent) -> bytes:
        """Another route took over `suffix`. To the same publisher (the same first hop), the
        peer's subscriptions carry on (the relay fails them over), so the announcement stays:
        lite-06 says the new route with UPDATE, lite-05 replaces with a second active. Otherwise,
        and on lite-01..04 (where a second active is an error), it ends and starts again; a Rust
        client then resubscribes."""
        same = previous.publisher != 0 and broadcast.hops[:1] == (previous.publisher,)
        if same and self.v.has_typed_announce:
            self.sent[suffix] = _Sent.of(broadcast, previous.announce_id)
            cost = broadcast.cost
            return m.AnnounceUpdate(id=previous.announce_id, hops=list(broadcast.hops), cost=cost,
                                    cold_cost=cost).encode(self.v)
        if same and self.v == Version.LITE_05:
            return self._active(suffix, broadcast)
        return self._ended(suffix) + self._active(suffix, broadcast)

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
                self.sent[suffix] = _Sent.of(broadcast, 0)
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
            elif previous.generation != broadcast.generation:
                out += self._rerouted(suffix, broadcast, previous)
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

