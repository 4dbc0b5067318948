"""One downstream subscription's fan-out, whatever protocol the subscriber speaks.

A `Fanout` follows the shared track a `Subscription` holds and decides, for this one subscriber,
which groups to send and when (lite §7.3): each group is chosen when it would start, among the
groups waiting, so a group more than the subscriber's max latency older than the newest is never
started (at max latency 0 only the newest is); a group under way that goes stale is aborted;
groups that arrive in a burst are chosen among once it pauses. Each group goes out through the
protocol's `GroupSink` on a stream of its own, and is finished only after all of its frames.

When the route the track is pulled over goes away while another route to the same publisher is
live (relay spec §10.3), the fan-out moves there and carries on after the last group it started.
It moves the same way when a strictly better route to that publisher appears (cheaper, or as
cheap with fewer hops: relay-0.17 §5.5), once the groups under way on the old one are sent, and
then lets the old route's pull go. Every task lives in the nursery of `run()`, so the
subscription's end cancels its group sends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from relay.concurrency import open_nursery
from relay.model.broadcast import Broadcast, LimitExceeded, Subscription
from relay.model.codes import ErrorCode
from relay.model.subscription import Wish
from relay.model.track import DatagramListener, Frame, Group, GroupAborted, Track, TrackClosed
from relay.transport.base import TransportError

log = logging.getLogger("relay.fanout")

MAX_FAILOVERS = 64  # route changes one subscription follows before it simply ends


class GroupStream(Protocol):
    """One group on its way to the subscriber, in the protocol's encoding."""

    async def write(self, frame: Frame, previous_timestamp: int) -> None:
        """The next frame (its timestamp relative to the previous one's, for delta encodings)."""

    async def finish(self) -> None:
        """Every frame was written: end the stream cleanly, once the transport has sent all but
        its last few bytes (SendStream.drain). Until then the group is still in flight: a slow
        subscriber's group that goes stale meanwhile is aborted rather than left queued."""

    def abort(self, code: int) -> None:
        """End the stream with a moq error code (Old, Cancel, or why the group was aborted)."""


class GroupSink(Protocol):
    """What a protocol family provides for a fan-out to send groups to one subscriber."""

    async def first_group(self, sequence: int) -> None:
        """Called once, just before the first group's stream (lite-05+ SUBSCRIBE_START)."""

    async def open_group(self, sequence: int, priority: int) -> GroupStream:
        """Open the group's stream and send its header, in the order groups are started.

        Raises TransportError when the subscriber's session cannot take it."""


class Fanout:
    """Groups of one shared track, chosen and sent for one subscriber."""

    def __init__(self, subscription: Subscription, broadcast: Broadcast, sink: GroupSink, *,
                 routes: contextlib.ExitStack, lookup: Callable[[], Broadcast | None],
                 max_inflight: int, name: str, start_is_lower_bound: bool = False,
                 datagrams: DatagramListener | None = None,
                 on_failover: Callable[[], None] | None = None,
                 hold: contextlib.ExitStack | None = None,
                 route_changes: Callable[[], Awaitable[None]] | None = None) -> None:
        self.subscription = subscription
        self.track = subscription.track
        self.broadcast = broadcast
        self.sink = sink
        # Failover enters the next route's subscription on the caller's exit stack, so it is
        # released with the subscription's own. `hold` is the stack (entered on `routes`) that
        # holds the current route's subscription alone: closing it lets that route's pull go,
        # which moving to a better route does. Without one (or without `route_changes`, a wait
        # for the path's routes to change), the fan-out stays on a route while it lives.
        self.routes = routes
        self.hold = hold
        self.route_changes = route_changes
        self._better: Broadcast | None = None  # a better route found while following
        self.lookup = lookup
        self.max_inflight = max_inflight
        self.name = name
        # Without a start, lite-03..05 begin at the latest group; lite-06's start is a plain lower
        # bound (0 = from group 0), so every cached group still fresh is sent.
        self.start_is_lower_bound = start_is_lower_bound
        self.datagrams = datagrams
        self.on_failover = on_failover
        self.failovers = 0
        self.last_sequence: int | None = None  # the newest group started
        self.started = 0  # group streams opened
        self.inflight: dict[int, trio.CancelScope] = {}
        # In-flight groups aborted for going stale (their senders count what was left unsent),
        # and the cached groups already stale when this subscriber came (never its to skip).
        self._expired: set[int] = set()
        self._stale_on_arrival: set[int] = set()
        self.unsubscribed = False
        self.abort_code = ErrorCode.OLD  # why an in-flight group stream is aborted
        self._cancel: trio.CancelScope | None = None
        self._turn: trio.Event | None = None  # set once the newest sender wrote its first frame

    @property
    def wish(self) -> Wish:
        return self.subscription.wish

    # -- control ---------------------------------------------------------------------------------
    def unsubscribe(self) -> None:
        """The subscriber is gone: stop, aborting the groups under way with Cancel."""
        self.unsubscribed = True
        self.abort_code = ErrorCode.CANCEL
        for scope in self.inflight.values():
            scope.cancel()
        if self._cancel is not None:
            self._cancel.cancel()

    async def run(self) -> None:
        """Send groups until the track ends (after following any failover) or unsubscribe()."""
        if self.datagrams is not None:
            self.track.add_datagram_listener(self.datagrams)
        try:
            with trio.CancelScope() as self._cancel:
                await self._follow()
                while not self.unsubscribed:
                    old = self.track
                    if self._better is not None:
                        self._upgrade()  # or, no longer better, carry on over the same route
                    elif not self._fail_over():
                        break
                    if self.datagrams is not None:
                        old.remove_datagram_listener(self.datagrams)
                        self.track.add_datagram_listener(self.datagrams)
                    await self._follow()
        finally:
            if self.datagrams is not None:
                self.track.remove_datagram_listener(self.datagrams)

    def _same_publisher(self, nxt: Broadcast | None) -> bool:
        """Whether `nxt` is another route to our publisher: only that continues our group
        numbering (the first hop is the publisher's origin id); another publisher of the path
        starts its own."""
        if nxt is None or nxt is self.broadcast or nxt.closed:
            return False
        first = self.broadcast.hops[0] if self.broadcast.hops else 0
        return bool(first) and bool(nxt.hops) and nxt.hops[0] == first

    def _better_route(self) -> Broadcast | None:
        """The path's best route, if it reaches our publisher strictly better than ours does (an
        equal one that is merely newer is not worth a move)."""
        nxt = self.lookup()
        if not self._same_publisher(nxt):
            return None
        assert nxt is not None
        ours = self.broadcast
        return nxt if (nxt.cost, len(nxt.hops)) < (ours.cost, len(ours.hops)) else None

    def _move_to(self, nxt: Broadcast, why: str) -> bool:
        """Follow `nxt` from here on (after the last group started); False if it cannot serve."""
        hold = contextlib.ExitStack()
        try:
            subscription = hold.enter_context(nxt.subscribe(self.track.name, self.wish, self.subscription.viewer))
        except (TrackClosed, LimitExceeded):
            return False
        self.routes.enter_context(hold)
        if self.hold is not None:
            self.hold.close()  # the old route's pull goes, unless other readers share it
        self.hold = hold
        self.failovers += 1
        log.info("%s %s/%s %s to hops=%s after group %s", self.name, nxt.path, self.track.name, why,
                 list(nxt.hops), self.last_sequence)
        self.broadcast, self.subscription, self.track = nxt, subscription, subscription.track
        return True

    def _upgrade(self) -> bool:
        """Following stopped for a better route: move to the best one, if one is still better."""
        self._better = None
        nxt = self._better_route()
        if nxt is None or self.failovers >= MAX_FAILOVERS:
            return False
        return self._move_to(nxt, "moves to a better route")

    def _fail_over(self) -> bool:
        """The track ended: if its route went away and another is live, continue over that one."""
        if not self.broadcast.closed or self.failovers >= MAX_FAILOVERS:
            return False  # the publisher ended the track itself (or we have moved too often)
        nxt = self.lookup()
        if not self._same_publisher(nxt):
            return False
        assert nxt is not None
        if not self._move_to(nxt, "fails over"):
            return False
        if self.on_failover is not None:
            self.on_failover()
        return True

    async def _watch_routes(self) -> None:
        """Until a better route to our publisher appears: then stop following this one."""
        assert self.route_changes is not None
        while True:
            await self.route_changes()
            if (better := self._better_route()) is not None:
                self._better = better
                self.track.wake()
                return

    # -- choosing groups ---------------------------------------------------------------------------
    def _first_candidates(self) -> tuple[int, int | None, list[Group]]:
        """(arrival cursor, lowest group wanted, cached groups to consider) as a track starts."""
        track = self.track
        cursor, cached = track.cached_in_arrival_order()
        self._stale_on_arrival = {g.sequence for g in cached if track.stale(g, self.wish.max_latency_ms)}
        floor = self.wish.start
        if self.last_sequence is not None:
            # After a failover: continue after the last group sent (older ones the new route
            # replays from its cache are skipped).
            floor = self.last_sequence + 1
        elif self.start_is_lower_bound:
            floor = floor or 0
        elif floor is None:
            # No start: the latest group, or the first one produced.
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
        if not track.stale(group, self.wish.max_latency_ms):
            return True
        if group.sequence not in self._stale_on_arrival:
            # It was worth starting when it came and drifted past the budget while it waited.
            track.traffic.went_stale(len(group.frames), group.size)
        return False

    async def _follow(self) -> None:
        track = self.track
        cursor, floor, pending = self._first_candidates()
        watch = trio.CancelScope()
        async with open_nursery() as nursery:
            if self.hold is not None and self.route_changes is not None and self.failovers < MAX_FAILOVERS:
                nursery.start_soon(self._watch_routes_in, watch)
            while True:
                if self._better is not None:
                    break  # the groups under way finish (the nursery waits for them); then we move
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
                    if await self._start(nursery, group) and self.started == 1:
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
            watch.cancel()

    async def _watch_routes_in(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._watch_routes()

    def _expire(self) -> None:
        """In-flight groups that went stale are not worth finishing: abort them (code Old)."""
        track = self.track
        latest = track.latest
        if latest is None or not self.inflight:
            return
        for seq, scope in list(self.inflight.items()):
            group = track.groups.get(seq)
            if seq < latest.sequence and (group is None or track.stale(group, self.wish.max_latency_ms)):
                del self.inflight[seq]  # counted once, though its sender ends at its next checkpoint
                self._expired.add(seq)
                scope.cancel()
                track.traffic.drop("stale")

    # -- sending ---------------------------------------------------------------------------------
    async def _start(self, nursery: trio.Nursery, group: Group) -> bool:
        """Open the group's stream and hand it to a sender task; False if it could not start."""
        if len(self.inflight) >= self.max_inflight:
            oldest = min(self.inflight)
            if oldest > group.sequence:
                return False
            self.inflight.pop(oldest).cancel()
            self.track.traffic.drop("inflight")
        if not self.started:
            await self.sink.first_group(group.sequence)
        # Streams are opened (and their headers sent) here, in order: groups then leave in
        # sequence order on every transport (one TCP stream for WebSocket), and a client reading
        # in sequence order does not skip an older group that merely lost a scheduling race.
        try:
            stream = await self.sink.open_group(group.sequence, self.wish.priority)
        except TransportError:
            return False
        scope = trio.CancelScope()
        self.inflight[group.sequence] = scope
        self.started += 1
        self.track.traffic.groups_out += 1
        if self.last_sequence is None or group.sequence > self.last_sequence:
            self.last_sequence = group.sequence
        # Each sender writes its first frame only after the group started before it has written
        # its own (or ended): groups started together (a burst) then reach the transport in
        # order, first frames included. Without it trio may run the newer sender first: over
        # WebSocket (one ordered pipe, no priorities) the newer group then arrives whole before
        # the older one's frames, and a client whose stream readers race (moq-rs: the first to
        # run creates its group; next_group skips anything older) loses the older group.
        after, self._turn = self._turn, trio.Event()
        nursery.start_soon(self._send, group, scope, stream, after, self._turn)
        return True

    async def _send(self, group: Group, scope: trio.CancelScope, stream: GroupStream,
                    after: trio.Event | None, turn: trio.Event) -> None:
        traffic = self.track.traffic
        sent = sent_bytes = 0
        try:
            with scope:
                if after is not None:
                    await after.wait()
                previous = 0
                async for frame in group.frames_from(0):
                    await stream.write(frame, previous)
                    turn.set()
                    traffic.frames_out += 1
                    traffic.bytes_out += len(frame.payload)
                    sent += 1
                    sent_bytes += len(frame.payload)
                    previous = frame.timestamp
                turn.set()
                await stream.finish()
            if scope.cancelled_caught:
                stream.abort(self.abort_code)
                if group.sequence in self._expired:
                    traffic.went_stale(len(group.frames) - sent, group.size - sent_bytes)
        except GroupAborted as exc:
            stream.abort(exc.code)
        except TransportError:
            pass
        finally:
            turn.set()
            self._expired.discard(group.sequence)
            if self.inflight.get(group.sequence) is scope:
                del self.inflight[group.sequence]


def ended_at(track: Track) -> int:
    """The exclusive end of a finished track: what upstream said, else after the newest group."""
    if track.end_sequence is not None:
        return track.end_sequence
    return track.latest.sequence + 1 if track.latest is not None else 0
