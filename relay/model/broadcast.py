"""A broadcast: a path, the route it came by, and its tracks shared by every subscriber."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Protocol

from relay.model.cache import CacheBudget
from relay.model.track import Track, TrackClosed

# A peer can make us create one track (and one upstream subscription) per name it asks for.
MAX_TRACKS_PER_BROADCAST = 1024

_generation = itertools.count(1)


class LimitExceeded(Exception):
    """A table a peer can grow reached its limit."""


class TrackSource(Protocol):
    """Whoever can fill a track: a publishing session (or, later, a cluster link)."""

    def serve_track(self, track: Track) -> Callable[[], None]:
        """Start one upstream subscription filling `track`; return a function that cancels it.

        The upstream work runs in the source's own nursery, so it dies with the source. It must
        eventually call track.close() (with an error code if it failed)."""
        ...


class _TrackEntry:
    __slots__ = ("track", "refs", "cancel")

    def __init__(self, track: Track) -> None:
        self.track = track
        self.refs = 0
        self.cancel: Callable[[], None] = lambda: None


class Broadcast:
    """A published broadcast. Exactly one upstream subscription per track, however many readers."""

    def __init__(self, path: str, source: TrackSource, hops: tuple[int, ...] = (), *,
                 budget: CacheBudget | None = None, max_cache_age: float | None = None,
                 cost: int = 0) -> None:
        self.path = path
        self.source = source
        self.hops = hops
        self.cost = cost
        self.generation = next(_generation)
        self._budget = budget
        self._max_cache_age = max_cache_age
        self._tracks: dict[str, _TrackEntry] = {}
        self.closed = False
        self.upstream_subscriptions_total = 0

    def __repr__(self) -> str:
        return f"Broadcast({self.path!r}, hops={list(self.hops)}, gen={self.generation})"

    @property
    def track_names(self) -> list[str]:
        return list(self._tracks)

    def upstream_count(self) -> int:
        """Live upstream subscriptions (one per track with at least one reader)."""
        return len(self._tracks)

    @contextlib.contextmanager
    def subscribe(self, name: str) -> Iterator[Track]:
        """Share (or start) the upstream subscription of track `name` while the block runs."""
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
            entry = _TrackEntry(Track(self.path, name, self._budget, self._max_cache_age))
            self._tracks[name] = entry
            entry.cancel = self.source.serve_track(entry.track)
            self.upstream_subscriptions_total += 1
        entry.refs += 1
        try:
            yield entry.track
        finally:
            entry.refs -= 1
            if entry.refs == 0 and self._tracks.get(name) is entry:
                self._detach(name, entry)

    def _detach(self, name: str, entry: _TrackEntry) -> None:
        del self._tracks[name]
        entry.cancel()
        entry.track.close()
        entry.track.drop_cache()

    def close(self) -> None:
        """The publisher is gone: every track ends for every reader."""
        if self.closed:
            return
        self.closed = True
        for entry in list(self._tracks.values()):
            entry.cancel()
            entry.track.close()
        self._tracks.clear()
