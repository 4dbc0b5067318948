"""The relay-wide byte budget of cached group payloads (`[cache] capacity`, `headroom`)."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.model.track import Track

log = logging.getLogger("relay.cache")

# Available memory is read at most this often, on the write path: reading /proc/meminfo costs tens
# of microseconds, far too much per frame, and memory does not run out faster than a quarter second.
HEADROOM_CHECK_INTERVAL = 0.25
# While memory stays short, one log line per this many seconds (with what was evicted since).
HEADROOM_LOG_INTERVAL = 10.0

MemoryReader = Callable[[], "int | None"]


class CacheBudget:
    """Counts payload bytes held by track caches; tracks evict their stalest groups when over.

    It also holds `max_age` (`[cache] duration`): how long a non-latest group may stay. Every
    track reads both here at each eviction, so a reload that changes them reaches live tracks.

    `headroom` (`[cache] headroom`): memory to keep free. While `read_available()` (bytes the host
    can still allocate; None = unknown) says less than that, groups are evicted across every track,
    oldest arrival first, until the bytes evicted cover the shortfall. Sans-IO: the reader and the
    clock are passed in."""

    def __init__(self, capacity: int | None = None, max_age: float | None = None, headroom: int | None = None,
                 *, read_available: MemoryReader | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self.headroom = headroom
        self.used = 0
        self._read_available = read_available
        self._clock = clock
        self._next_check = 0.0
        # Tracks whose groups this budget counts; weak, so a finished track leaves by itself (the
        # set is bounded by the live tracks, which the origin bounds).
        self._tracks: weakref.WeakSet[Track] = weakref.WeakSet()
        # Groups evicted, by reason (only "headroom" so far), for the metrics.
        self.evictions: dict[str, int] = {}
        self.evicted_bytes: dict[str, int] = {}
        self._next_log = 0.0
        self._unlogged = (0, 0)  # (groups, bytes) evicted since the last log line

    def register(self, track: Track) -> None:
        self._tracks.add(track)

    def add(self, n: int) -> None:
        self.used += n
        self.poll()

    def poll(self) -> None:
        """relieve() if HEADROOM_CHECK_INTERVAL has passed since the last check. Called on every
        write and by the relay's timer (so memory other processes take is given back while the
        cache is idle too); both share this gate, so memory is read at most 4 times a second."""
        if self.headroom is not None and self._read_available is not None:
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + HEADROOM_CHECK_INTERVAL
                self.relieve(now)

    def remove(self, n: int) -> None:
        self.used = max(0, self.used - n)

    @property
    def over(self) -> bool:
        return self.capacity is not None and self.used > self.capacity

    def relieve(self, now: float | None = None) -> int:
        """Evict groups while available memory is below the headroom; return the bytes evicted.

        Oldest arrival first across every track, never a track's latest group, and stop once the
        evicted bytes (by this cache's own count) cover the shortfall or nothing else may go. A
        group a subscriber is still being sent only leaves the cache: its sender holds it."""
        if self.headroom is None or self._read_available is None:
            return 0
        available = self._read_available()
        if available is None or available >= self.headroom:
            return 0
        shortfall = self.headroom - available
        candidates = [(group, track) for track in list(self._tracks)
                      for group in track.groups.values() if group is not track.latest]
        candidates.sort(key=lambda c: c[0].arrived)
        freed = groups = 0
        for group, track in candidates:
            if freed >= shortfall:
                break
            size = group.size
            if track.discard(group):
                freed += size
                groups += 1
        if groups:
            self.evictions["headroom"] = self.evictions.get("headroom", 0) + groups
            self.evicted_bytes["headroom"] = self.evicted_bytes.get("headroom", 0) + freed
        self._log(self._clock() if now is None else now, available, shortfall, groups, freed)
        return freed

    def _log(self, now: float, available: int, shortfall: int, groups: int, freed: int) -> None:
        total_groups, total_bytes = self._unlogged[0] + groups, self._unlogged[1] + freed
        if now < self._next_log:
            self._unlogged = (total_groups, total_bytes)
            return
        self._next_log = now + HEADROOM_LOG_INTERVAL
        self._unlogged = (0, 0)
        log.warning("cache headroom: %d bytes available, below the headroom of %d by %d; evicted %d groups "
                    "(%d bytes) since the last report, %d bytes still cached",
                    available, self.headroom, shortfall, total_groups, total_bytes, self.used)
