"""Our side as a subscriber: what the peer publishes, pulled into the origin (lite §5.2-§5.5).

We ask the peer what it announces and mirror that into the origin while the request lives; each
track someone reads is pulled with one upstream subscription that asks for what the readers want
(the track's demand) and follows it with SUBSCRIBE_UPDATE; group streams and datagrams fill the
shared track. `LiteSubscriber` is the `TrackSource` of the broadcasts the peer publishes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from relay.concurrency import open_nursery
from relay.errors import Refused
from relay.model import path as paths
from relay.model.broadcast import Broadcast, LimitExceeded
from relay.model.subscription import Wish
from relay.model.track import Frame, TooLarge, Track, TrackInfo
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.version import Version
from relay.transport.base import RecvStream, SendStream, SessionClosed, StreamReset, TransportError

if TYPE_CHECKING:
    from relay.protocol.lite.session import LiteSession

log = logging.getLogger("relay.session")

# Asked for max latency 0, the Rust publisher sometimes ends a group early when the next one
# starts and FINs it as if it were whole (seen with moq-rs 0.5.1 on lite-03..06); at 1 ms it never
# did, while still skipping stale groups as 0 would. So 0 is asked as 1.
MIN_UPSTREAM_LATENCY_MS = 1


class LiteSubscriber:
    """The peer's broadcasts in our origin, and the upstream subscriptions that fill their tracks."""

    def __init__(self, session: LiteSession) -> None:
        self.session = session
        self.published: dict[str, Broadcast] = {}  # absolute path -> what the peer announced
        self.upstream: dict[int, Track] = {}  # our subscribe id -> the track it fills
        self._next_id = 0
        # The announce stream's broadcasts by relative path, and the announcements a re-checked
        # grant holds back (outside it, within the admitted scope): relative path -> hops, cost.
        self._mine: dict[str, Broadcast] | None = None
        self.withheld: dict[str, tuple[tuple[int, ...], int]] = {}

    def rescoped(self) -> None:
        """The session's scope changed: what it may no longer publish aborts (Unauthorized) and
        is held back; what it may publish again comes back."""
        s = self.session
        scope = s.scope
        assert scope is not None
        mine = self._mine if self._mine is not None else {}
        for rel, broadcast in list(mine.items()):
            if not scope.can_publish(rel):
                log.info("%s may no longer publish %s; aborting it", s.name, broadcast.path)
                del mine[rel]
                self._drop(broadcast, ErrorCode.UNAUTHORIZED)
                self.withheld[rel] = (broadcast.hops, max(0, broadcast.cost - s.link_cost))
        for rel, (hops, cost) in list(self.withheld.items()):
            if scope.can_publish(rel):
                del self.withheld[rel]
                self._announced(mine, rel, hops, cost)

    def close(self) -> None:
        """The session is over: what the peer published is lost, its tracks end."""
        for broadcast in list(self.published.values()):
            self.session.origin.unpublish(broadcast)
            broadcast.close(ErrorCode.CANCEL)
        self.published.clear()
        for track in list(self.upstream.values()):
            track.close(ErrorCode.CANCEL)
        self.upstream.clear()

    # ------------------------------------------------------------------ announcements in
    async def learn_announcements(self) -> None:
        """Ask the peer what it publishes; mirror it into the origin while the stream lives."""
        s = self.session
        v = s.version
        try:
            send, recv = await s.transport.open_bi()
        except TransportError:
            return
        reader = MessageReader(recv, s.limits.max_message + 16)
        mine: dict[str, Broadcast] = {}
        self._mine = mine
        ids: dict[int, str] = {}  # lite-06 announce id -> suffix
        lost: int | None = ErrorCode.CANCEL
        next_id = 0
        try:
            exclude = s.hop_id if v.has_exclude_hop else 0
            await send.write(m.encode_bi_type(m.BiStream.ANNOUNCE)
                             + m.AnnounceRequest(prefix="", exclude_hop=exclude).encode(v))
            peer_hop = 0
            if v.has_announce_ok:
                ok = await reader.message(m.AnnounceOk.decode, v, s.limits.max_message)
                if ok is None:
                    return
                peer_hop = ok.hop_id
                s.peer_hop = s.peer_hop or peer_hop
            elif v.has_announce_init:
                init = await reader.message(m.AnnounceInit.decode, v, s.limits.max_message)
                if init is None:
                    return
                for suffix in init.suffixes:
                    self._announced(mine, suffix, ())
            while True:
                try:
                    if v.has_typed_announce:
                        msg = await reader.typed(m.decode_announce_06, v, s.limits.max_message)
                    else:
                        msg = await reader.message(m.Announce.decode, v, s.limits.max_message)
                except ProtocolError as exc:
                    if exc.code != ErrorCode.BOUNDS_EXCEEDED or v.has_typed_announce:
                        raise
                    # A hop chain over 32 (or a path over 32 parts): refuse that announcement
                    # only; its bytes are already consumed (relay spec §13). On lite-06 an
                    # unparsed START would shift every later announce id, so it stays fatal.
                    log.info("%s announcement refused: %s", s.name, exc)
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
            s.fail(exc)
            lost = None
        except (StreamEnded, TransportError):
            pass
        finally:
            # Anything but the publisher's own end of the stream means it was lost.
            for suffix in list(mine):
                self._unannounced(mine, suffix, lost)

    def _announced(self, mine: dict[str, Broadcast], suffix: str, hops: tuple[int, ...], cost: int = 0) -> None:
        s = self.session
        assert s.scope is not None
        rel = paths.norm(suffix)
        if s.hop_id in hops:
            log.debug("%s ignoring looped announce %s hops=%s", s.name, rel, hops)
            return
        if len(hops) > m.MAX_HOPS:
            log.info("%s ignoring announce %s with %d hops", s.name, rel, len(hops))
            return
        if not s.scope.can_publish(rel):
            ceiling = s.scope.ceiling
            if ceiling is not None and ceiling.can_publish(rel) and len(self.withheld) < s.limits.max_published:
                self.withheld[rel] = (hops, cost)  # a wider re-check may let it through
                log.info("%s announce of %s held back: its grant no longer allows it", s.name, rel)
                return
            if paths.reserved_prefix(s.scope.absolute(rel)):
                log.warning("%s announce of %s refused: the reserved prefix /%s is only for the relay and "
                            "cluster peers granted it by name", s.name, s.scope.absolute(rel),
                            paths.reserved_prefix(s.scope.absolute(rel)))
            else:
                log.info("%s announce outside its publish scope ignored: %s", s.name, rel)
            return
        abs_path = s.scope.absolute(rel)
        old = mine.pop(rel, None)
        if old is None and len(self.published) >= s.limits.max_published:
            log.warning("%s announces more than %d broadcasts; ignoring %s", s.name,
                        s.limits.max_published, rel)
            return
        broadcast = Broadcast(abs_path, self, hops, budget=s.origin.budget, traffic=s.origin.traffic, cost=min(cost + s.link_cost, 2**62 - 1))
        try:
            s.origin.publish(broadcast)
        except LimitExceeded as exc:
            log.warning("%s cannot publish %s: %s", s.name, abs_path, exc)
            if old is not None:
                self._drop(old)
            return
        if old is not None:  # a restart: the new announcement replaces the old one
            self._drop(old)
        mine[rel] = broadcast
        self.published[abs_path] = broadcast
        log.info("%s publishes %s hops=%s", s.name, abs_path, list(hops))

    def _unannounced(self, mine: dict[str, Broadcast], suffix: str, error: int | None = None) -> None:
        s = self.session
        self.withheld.pop(paths.norm(suffix), None)
        broadcast = mine.pop(paths.norm(suffix), None)
        if broadcast is not None:
            self._drop(broadcast, error)
            log.info("%s unpublished %s%s", s.name, broadcast.path, "" if error is None else " (lost)")

    def _drop(self, broadcast: Broadcast, error: int | None = None) -> None:
        s = self.session
        s.origin.unpublish(broadcast)
        broadcast.close(error)
        if self.published.get(broadcast.path) is broadcast:
            del self.published[broadcast.path]

    def _relative(self, broadcast_path: str) -> str:
        """A broadcast's path as this peer names it (relative to the session's root)."""
        scope = self.session.scope
        assert scope is not None
        return scope.relative(broadcast_path) or ""

    async def _request(self, kind: int, first: m.TrackRequest | m.Fetch | m.Subscribe,
                       max_buffer: int) -> tuple[SendStream, MessageReader]:
        """Open a request stream to the peer and send its first message."""
        s = self.session
        send, recv = await s.transport.open_bi()
        await send.write(m.encode_bi_type(kind) + first.encode(s.version))
        return send, MessageReader(recv, max_buffer)

    # ------------------------------------------------------------------ upstream pulls (TrackSource)
    def serve_track(self, track: Track) -> Callable[[], None]:
        """TrackSource: pull `track` from this peer with one subscription in our nursery."""
        s = self.session
        cancel_scope = trio.CancelScope()
        if not s.spawn(self._pull_track, track, cancel_scope):
            track.close(ErrorCode.CANCEL)
        return cancel_scope.cancel

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        """TrackSource: ask this peer for a track's TRACK_INFO (lite-05+), or the default."""
        s = self.session
        if not s.version.has_track_stream:
            return TrackInfo()
        # No FIN before TRACK_INFO arrives: moq-rs 0.4.18 resets a TRACK request whose sender
        # already finished (the spec says "then FIN"; the real client wins).
        send, reader = await self._request(m.BiStream.TRACK, m.TrackRequest(broadcast=self._relative(broadcast_path),
                                                                             track=name), s.limits.max_message + 16)
        try:
            info = await reader.message(m.TrackInfoMsg.decode, s.version, s.limits.max_message)
            if info is None:
                raise ProtocolError(ErrorCode.DECODE, "TRACK stream ended without TRACK_INFO")
            await send.finish()
            return TrackInfo(priority=info.priority, ordered=info.ordered,
                             max_latency_ms=info.max_latency_ms, timescale=info.timescale)
        finally:
            reader.recv.stop(ErrorCode.CANCEL)

    async def fetch_group(self, broadcast_path: str, name: str, sequence: int, priority: int = 0):
        """TrackSource: one past group from this peer by FETCH (lite-05+), frames as they come.

        Raises Refused(NOT_FOUND) when the peer cannot serve it."""
        s = self.session
        if not s.version.has_fetch:
            raise Refused(ErrorCode.NOT_FOUND, f"{s.version.name_str} peers cannot be fetched from")
        # As with TRACK, moq-rs resets a FETCH whose sender already finished: FIN after.
        send, reader = await self._request(m.BiStream.FETCH, m.Fetch(self._relative(broadcast_path), name,
                                                                     priority, sequence), s.limits.max_frame + 64)
        try:
            timestamp = 0
            while True:
                frame = await reader.frame(s.version, s.limits.max_frame)
                if frame is None:
                    await send.finish()
                    return
                timestamp += frame[0]
                yield Frame(frame[1], timestamp)
        except (StreamEnded, TransportError) as exc:
            raise Refused(ErrorCode.NOT_FOUND, f"upstream fetch failed: {exc}") from exc
        finally:
            reader.recv.stop(ErrorCode.CANCEL)

    async def _pull_track(self, track: Track, cancel_scope: trio.CancelScope) -> None:
        s = self.session
        v = s.version
        rel = self._relative(track.broadcast_path)
        sub_id = self._next_id
        self._next_id += 1
        send: SendStream | None = None
        error: int | None = None
        try:
            with cancel_scope:
                if track.info is None:
                    if v.has_track_stream:
                        with trio.fail_after(s.limits.track_info_timeout):
                            track.set_info(await self.fetch_track_info(track.broadcast_path, track.name))
                    else:
                        track.set_info(TrackInfo())
                self.upstream[sub_id] = track  # registered before SUBSCRIBE (lite §5.5)
                send, recv = await s.transport.open_bi()
                reader = MessageReader(recv, s.limits.max_message + 16)
                # Ask for what the subscribers want, no more (lite §7.1); re-ask as that changes.
                wish = self._upstream_wish(track)
                sub = m.Subscribe(id=sub_id, broadcast=rel, track=track.name, priority=wish.priority,
                                  ordered=wish.ordered, max_latency_ms=wish.max_latency_ms,
                                  start_group=wish.start, end_group=wish.end)
                track.asked_upstream(wish.max_latency_ms)
                await send.write(m.encode_bi_type(m.BiStream.SUBSCRIBE) + sub.encode(v))
                log.debug("%s subscribed upstream %s/%s id=%d %s", s.name, track.broadcast_path, track.name,
                          sub_id, wish)
                async with open_nursery() as nursery:
                    if v >= Version.LITE_03:
                        nursery.start_soon(self._forward_demand, track, send, wish)
                    ended = False
                    while True:
                        reply = await reader.subscribe_response(v, s.limits.max_message)
                        if reply is None:
                            if v.has_subscribe_start and not ended:
                                # lite-05+: a clean end says where the track ended first (relay-0.17
                                # §6.3); a bare FIN fails the subscription, its open groups abort.
                                raise ProtocolError(ErrorCode.PROTOCOL_VIOLATION, "subscription FIN without SUBSCRIBE_END")
                            break
                        if isinstance(reply, m.SubscribeEnd):
                            ended = True
                            track.end(reply.group)
                        # OK and DROP need no action: groups tell us everything else.
                    nursery.cancel_scope.cancel()
        except trio.Cancelled:
            # The session is going away (our own unsubscribe is absorbed by cancel_scope):
            # groups still open upstream will never finish, so readers must see them aborted.
            error = ErrorCode.CANCEL
            raise
        except trio.TooSlowError:
            log.info("%s no TRACK_INFO for %s/%s", s.name, track.broadcast_path, track.name)
            error = ErrorCode.TIMEOUT
        except StreamReset as exc:
            log.info("%s upstream refused %s/%s (code %s)", s.name, track.broadcast_path, track.name, exc.code)
            error = ErrorCode.NOT_FOUND
        except (StreamEnded, SessionClosed):
            error = ErrorCode.CANCEL
        except ProtocolError as exc:
            log.info("%s upstream subscription error: %s", s.name, exc)
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
            self.upstream.pop(sub_id, None)
            track.close(error)

    def _upstream_wish(self, track: Track) -> Wish:
        """The track's demand as this peer's version can carry it, within the publisher's window."""
        s = self.session
        wish = track.demand.combined or Wish()
        if s.version < Version.LITE_03:
            return Wish(priority=wish.priority)  # only the priority is on the wire (max latency 0)
        latency = wish.max_latency_ms
        if s.version.has_track_stream and track.info is not None:
            # Nobody can wait for a group longer than the publisher keeps it (TRACK_INFO).
            latency = min(latency, track.info.max_latency_ms)
        return dataclasses.replace(wish, max_latency_ms=max(latency, MIN_UPSTREAM_LATENCY_MS))

    async def _forward_demand(self, track: Track, send: SendStream, asked: Wish) -> None:
        """SUBSCRIBE_UPDATE upstream whenever the combined demand changes (lite-03+)."""
        s = self.session
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
                await send.write(update.encode(s.version))
            except TransportError:
                return  # the subscription is ending; its reply loop sees why
            log.debug("%s updated upstream %s/%s: %s", s.name, track.broadcast_path, track.name, wish)
            asked = wish

    async def recv_group(self, reader: MessageReader, recv: RecvStream) -> None:
        s = self.session
        v = s.version
        header = await reader.message(m.GroupHeader.decode, v, s.limits.max_message)
        if header is None:
            return
        track = self.upstream.get(header.subscribe_id)
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
                frame = await reader.frame(v, s.limits.max_frame)
                if frame is None:
                    break
                delta, payload = frame
                timestamp += delta
                group.append(Frame(payload, timestamp))
            if track.maybe_cut_short(group):
                # Possibly truncated by the publisher (see Track.maybe_cut_short): never let it
                # look complete to anyone.
                log.debug("%s group %d of %s/%s ended stale: dropped", s.name, group.sequence,
                          track.broadcast_path, track.name)
                group.abort(ErrorCode.OLD)
                track.discard(group)
            else:
                group.finish()
        except TooLarge as exc:
            group.abort(ErrorCode.FRAME_TOO_LARGE)
            recv.stop(ErrorCode.FRAME_TOO_LARGE)
            log.info("%s %s", s.name, exc)
        except StreamReset as exc:
            group.abort(exc.code if exc.code is not None else ErrorCode.CANCEL)
        except (ProtocolError, StreamEnded, SessionClosed):
            group.abort(ErrorCode.CANCEL)
            raise

    async def recv_datagrams(self) -> None:
        """Datagrams from a publisher (lite-05+): each is a one-frame group for one subscription."""
        s = self.session
        try:
            while True:
                data = await s.transport.recv_datagram()
                try:
                    dgram = m.Datagram.decode(data)
                except ProtocolError as exc:
                    log.debug("%s bad datagram dropped: %s", s.name, exc)
                    continue
                track = self.upstream.get(dgram.subscribe_id)
                if track is not None:  # unknown ids are dropped (lite §5.9)
                    track.push_datagram(dgram.sequence, dgram.timestamp, dgram.payload)
        except SessionClosed:
            pass

