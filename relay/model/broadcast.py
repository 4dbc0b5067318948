"""A broadcast: a path, the route it came by, and its tracks shared by every subscriber."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

import trio

from relay.errors import LocalError
from relay.model.cache import CacheBudget
from relay.model.subscription import Wish
from relay.model.track import Frame, Group, Track, TrackClosed, TrackInfo
from relay.model.traffic import Meter, Traffic

# A peer can make us create one track (and one upstream subscription) per name it asks for.
MAX_TRACKS_PER_BROADCAST = 1024

_generation = itertools.count(1)


class LimitExceeded(LocalError):
    """A table a peer can grow reached its limit."""


class TrackSource(Protocol):
    """Whoever can fill a track: a publishing session (or, later, a cluster link)."""

    def serve_track(self, track: Track) -> Callable[[], None]:
        """Start one upstream subscription filling `track`; return a function that cancels it.

        The upstream work runs in the source's own nursery, so it dies with the source. It must
        eventually call track.close() (with an error code if it failed)."""

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        """Ask the source for a track's properties (raises if the track does not exist)."""

    def fetch_group(self, broadcast_path: str, name: str, sequence: int, priority: int = 0) -> AsyncIterator[Frame]:
        """Frames of one past group the relay does not hold, asked of the source."""


class Subscription:
    """One reader's hold on a shared track: the track, and the wish it registered in the track's
    demand (which the upstream subscription carries to the publisher)."""

    __slots__ = ("track", "viewer", "_key", "_wish")

    def __init__(self, track: Track, wish: Wish, viewer: object | None = None) -> None:
        self.track = track
        self.viewer = viewer  # the session reading (a failover carries it to the next route)
        self._wish = wish
        self._key = track.demand.add(wish)

    @property
    def wish(self) -> Wish:
        return self._wish

    def update(self, wish: Wish) -> None:
        self._wish = wish
        self.track.demand.update(self._key, wish)

    def _release(self) -> None:
        self.track.demand.remove(self._key)


class _TrackEntry:
    __slots__ = ("track", "refs", "cancel")

    def __init__(self, track: Track) -> None:
        self.track = track
        self.refs = 0
        self.cancel: Callable[[], None] = lambda: None


class Broadcast:
    """A published broadcast. Exactly one upstream subscription per track, however many readers."""

    def __init__(self, path: str, source: TrackSource, hops: tuple[int, ...] = (), *,
                 budget: CacheBudget | None = None,
                 cost: int = 0, traffic: Traffic | None = None) -> None:
        self.path = path
        self.traffic = traffic if traffic is not None else Traffic()
        self.meter = Meter()  # what this broadcast's publisher sent, over all its tracks
        self.source = source
        self.hops = hops
        self.cost = cost
        self.generation = next(_generation)
        self._budget = budget
        self._tracks: dict[str, _TrackEntry] = {}
        self.closed = False
        self.upstream_subscriptions_total = 0
        # TRACK_INFO per track name, asked upstream once and shared (bounded like the tracks).
        self._infos: dict[str, TrackInfo] = {}
        self._info_pending: dict[str, trio.Event] = {}
        # Subscriptions per viewer (session) reading this broadcast: who counts as a viewer.
        self._viewers: dict[object, int] = {}

    def __repr__(self) -> str:
        return f"Broadcast({self.path!r}, hops={list(self.hops)}, gen={self.generation})"

    @property
    def track_names(self) -> list[str]:
        return list(self._tracks)

    def upstream_count(self) -> int:
        """Live upstream subscriptions (one per track with at least one reader)."""
        return len(self._tracks)

    def live_track(self, name: str) -> Track | None:
        """The shared track `name` while someone reads it (None otherwise)."""
        entry = self._tracks.get(name)
        return entry.track if entry is not None else None

    def cached_group(self, name: str, sequence: int) -> Group | None:
        """A group of a track someone is pulling, if it is still cached (for FETCH)."""
        entry = self._tracks.get(name)
        return entry.track.cached(sequence) if entry is not None else None

    async def track_info(self, name: str) -> TrackInfo:
        """The publisher's properties of track `name`; concurrent askers share one request."""
        while True:
            info = self._infos.get(name)
            if info is not None:
                return info
            entry = self._tracks.get(name)
            if entry is not None and entry.track.info is not None:
                return entry.track.info
            if self.closed:
                raise TrackClosed(None)
            pending = self._info_pending.get(name)
            if pending is None:
                break
            await pending.wait()  # another reader is asking; then look again
        if len(self._infos) + len(self._info_pending) >= MAX_TRACKS_PER_BROADCAST:
            raise LimitExceeded(f"more than {MAX_TRACKS_PER_BROADCAST} tracks in {self.path}")
        done = self._info_pending[name] = trio.Event()
        try:
            info = await self.source.fetch_track_info(self.path, name)
            self._infos[name] = info
            return info
        finally:
            del self._info_pending[name]
            done.set()

    def fetch_group(self, name: str, sequence: int, priority: int = 0, *,
                    follow: bool = True) -> AsyncIterator[Frame]:
        """One past group's frames, for a one-shot fetch: from the cache when a reader's track
        holds it (`follow`: waiting for the rest of a group still arriving; else what is held
        now), otherwise asked of the source. Every call is one fetch, found or not."""
        self.traffic.fetches += 1
        group = self.cached_group(name, sequence)
        if group is None:
            return self.source.fetch_group(self.path, name, sequence, priority)
        return group.frames_from(0) if follow else _held(group)

    @contextlib.contextmanager
    def subscribe(self, name: str, wish: Wish | None = None, viewer: object | None = None) -> Iterator[Subscription]:
        """Share (or start) the upstream subscription of track `name` while the block runs.

        `wish` joins the track's demand before any upstream request is made, so the first
        SUBSCRIBE already carries it; None = the latest group only (max latency 0). `viewer`
        (the reading session) makes its first subscription here a new viewer of the broadcast."""
        if self.closed:
            raise TrackClosed(None)
        entry = self._tracks.get(name)
        if entry is not None and entry.track.closed and entry.track.error is not None:
            # The upstream subscription failed: later readers get a fresh attempt.
            self._detach(name, entry)
            entry = None
        if entry is None:
            if len(self._tracks) >= MAX_TRACKS_PER_BROADCAST:
                raise LimitExceeded(f"more than {MAX_TRACKS_PER_BROADCAST} tracks in {self.path}")
            entry = _TrackEntry(Track(self.path, name, self._budget, self.traffic, self.meter))
            if name in self._infos:
                entry.track.set_info(self._infos[name])
            self._tracks[name] = entry
            subscription = Subscription(entry.track, wish or Wish(), viewer)
            entry.cancel = self.source.serve_track(entry.track)
            self.upstream_subscriptions_total += 1
            self.traffic.upstream_opened += 1
        else:
            subscription = Subscription(entry.track, wish or Wish(), viewer)
        entry.refs += 1
        self.traffic.downstream_opened += 1
        if viewer is not None:
            held = self._viewers.get(viewer, 0)
            self._viewers[viewer] = held + 1
            if not held:
                self.traffic.viewers_opened += 1
        try:
            yield subscription
        finally:
            self.traffic.downstream_closed += 1
            if viewer is not None:
                held = self._viewers.pop(viewer) - 1
                if held:
                    self._viewers[viewer] = held
                else:
                    self.traffic.viewers_closed += 1
            subscription._release()
            entry.refs -= 1
            if entry.refs == 0:
                if self._tracks.get(name) is entry:
                    self._detach(name, entry)
                elif self.closed:
                    # close() let go of the entry while readers were still sending its cached
                    # groups: the last of them gives the cache's bytes back to the budget.
                    entry.track.drop_cache()

    def _detach(self, name: str, entry: _TrackEntry) -> None:
        del self._tracks[name]
        self.traffic.upstream_closed += 1
        entry.cancel()
        entry.track.close()
        entry.track.drop_cache()

    def close(self, error: int | None = None) -> None:
        """The publisher is gone: every track ends for every reader.

        `error` None = a clean unannounce; a code = the publisher was lost (open groups abort)."""
        if self.closed:
            return
        self.closed = True
        for entry in list(self._tracks.values()):
            self.traffic.upstream_closed += 1
            entry.cancel()
            entry.track.close(error)
        self._tracks.clear()


async def _held(group: Group) -> AsyncIterator[Frame]:
    for frame in list(group.frames):
        yield frame
