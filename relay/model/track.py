"""Tracks, groups and frames as the relay holds them: one shared copy, many readers.

A Track is filled by exactly one upstream subscription and read by every downstream
subscriber. Frames are immutable `bytes` shared by all readers (no copy per subscriber).
Readers wait on lazily created trio Events, so a group nobody waits on costs no event.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from relay.errors import RemoteError
from relay.model.cache import CacheBudget
from relay.model.notify import Notifier
from relay.model.subscription import Demand
from relay.model.traffic import Meter, Traffic

# Rust rejects frames and groups above 32 MiB (lite §5.5, relay spec §8.6).
MAX_FRAME_SIZE = 32 * 1024 * 1024
MAX_GROUP_SIZE = 32 * 1024 * 1024
# Frames a group may hold: empty frames add nothing to its size, so without a count a publisher
# could grow one group's frame list for ever (about 100 bytes each). The Rust stack caps it at
# 8,192 (relay-0.17 §6.5 leaves the number unpublished; moq-rs 0.5.1's producer refuses the
# 8,193rd frame of a group, tried here), so no Rust publisher sends more and a Rust relay would
# not carry more; video groups hold hundreds of frames, audio groups one.
MAX_GROUP_FRAMES = 8192
# HEAD's retention when the publisher sent no TRACK_INFO (lite-03/04): 5 s.
DEFAULT_MAX_LATENCY_MS = 5000
# However small the groups, a track caches at most this many (bounds per-track tables).
MAX_CACHED_GROUPS = 1024
# How far back subscribers' arrival cursors can lag before they simply skip ahead.
ARRIVAL_HISTORY = 256
# Groups that reach the relay in a burst are chosen among once the burst pauses (Track.settling):
# a fresh upstream subscription, answered with the groups the publisher holds, pauses for
# FRESH_QUIET (waiting at most FRESH_MAX); mid-stream, arrivals closer than BURST_QUIET (far below
# the group interval of live tracks, 10 ms and more even for audio) are a burst, waited on for at
# most BURST_MAX.
FRESH_QUIET, FRESH_MAX = 0.02, 0.15
BURST_QUIET, BURST_MAX = 0.003, 0.05


DatagramListener = Callable[[int, int, bytes], None]


class TrackClosed(RemoteError):
    """The track ended (code None) or was aborted with a moq error code."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__("track closed" if code is None else f"track aborted (code {code})")
        self.code = code


class GroupAborted(RemoteError):
    def __init__(self, code: int) -> None:
        super().__init__(f"group aborted (code {code})")
        self.code = code


class TooLarge(RemoteError):
    """A frame or group above the 32 MiB limit, or a group above MAX_GROUP_FRAMES frames: the
    receiving session aborts the whole group (every reader sees the same failure)."""


@dataclass(slots=True)
class Frame:
    payload: bytes
    # Absolute timestamp in the track's timescale; 0 when the version carries none (<= lite-04).
    timestamp: int = 0
    # The encoded frame header within its group, made by the first subscriber that sends it and
    # shared by the rest (one with a timestamp delta for lite-05+, one without).
    header_ts: bytes | None = field(default=None, compare=False, repr=False)
    header_plain: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class TrackInfo:
    """The publisher's track properties (lite-05+ TRACK_INFO), forwarded verbatim."""

    priority: int = 0
    ordered: bool = False
    max_latency_ms: int = DEFAULT_MAX_LATENCY_MS
    timescale: int = 1000


class Group:
    """One group: an append-only list of frames, then finished or aborted."""

    __slots__ = ("sequence", "frames", "finished", "error", "arrived", "size", "_changed", "_budget", "_on_first",
                 "_traffic", "_meter")

    def __init__(self, sequence: int, budget: CacheBudget | None = None,
                 on_first_frame: Callable[[], None] | None = None, traffic: Traffic | None = None,
                 meter: Meter | None = None) -> None:
        self.sequence = sequence
        self.frames: list[Frame] = []
        self.finished = False
        self.error: int | None = None
        self.arrived = time.monotonic()
        self.size = 0
        self._changed = Notifier()
        self._budget = budget
        # The track hears of a group's first frame: its timestamp makes older groups stale.
        self._on_first = on_first_frame
        self._traffic = traffic
        self._meter = meter  # the broadcast's

    @property
    def done(self) -> bool:
        return self.finished or self.error is not None

    def append(self, frame: Frame) -> None:
        if self.done:
            return  # late data for a group we already closed: ignore
        n = len(frame.payload)
        if n > MAX_FRAME_SIZE or self.size + n > MAX_GROUP_SIZE:
            raise TooLarge(f"group {self.sequence} exceeds {MAX_GROUP_SIZE} bytes")
        if len(self.frames) >= MAX_GROUP_FRAMES:
            raise TooLarge(f"group {self.sequence} exceeds {MAX_GROUP_FRAMES} frames")
        self.frames.append(frame)
        self.size += n
        if self._budget is not None:
            self._budget.add(n)
        if self._traffic is not None:
            self._traffic.frames_in += 1
            self._traffic.bytes_in += n
        if self._meter is not None:
            self._meter.frames += 1
            self._meter.bytes += n
        self._changed.notify()
        if len(self.frames) == 1 and self._on_first is not None:
            self._on_first()

    def finish(self) -> None:
        if not self.done:
            self.finished = True
            self._changed.notify()

    def abort(self, code: int) -> None:
        if not self.done:
            self.error = code
            self._changed.notify()

    def release(self) -> None:
        """Called when the cache drops this group: its bytes leave the budget."""
        if self._budget is not None:
            self._budget.remove(self.size)
            self._budget = None

    async def frames_from(self, index: int = 0):
        """Yield frames from `index` on, waiting for new ones, until finished.

        Raises GroupAborted when the group was aborted before its end.
        """
        while True:
            if index < len(self.frames):
                frame = self.frames[index]
                index += 1
                yield frame
                continue
            if self.finished:
                return
            if self.error is not None:
                raise GroupAborted(self.error)
            await self._changed.wait()


class Track:
    """A track shared by all subscribers of a relay: info, cached groups, arrival order, end."""

    def __init__(self, broadcast_path: str, name: str, budget: CacheBudget | None = None,
                 traffic: Traffic | None = None, meter: Meter | None = None) -> None:
        self.broadcast_path = broadcast_path
        self.traffic = traffic if traffic is not None else Traffic()
        self.meter = meter if meter is not None else Meter()  # its broadcast's, shared by its tracks
        self.name = name
        self.info: TrackInfo | None = None
        self._info_ready = trio.Event()
        self._budget = budget
        if budget is not None:
            budget.register(self)  # headroom evicts across every track of the budget
        self.groups: dict[int, Group] = {}
        self.latest: Group | None = None
        # Arrival order (not sequence order): subscribers follow it with an integer cursor. Only
        # sequence numbers are kept, so an evicted group is not held alive by the history.
        self._arrivals: collections.deque[int] = collections.deque(maxlen=ARRIVAL_HISTORY)
        self._arrival_count = 0
        self._first_arrival: float | None = None
        self._last_arrival = 0.0
        self._burst_start: float | None = None  # first arrival of the burst under way, if any
        self._changed = Notifier()
        self.closed = False
        self.error: int | None = None
        # Exclusive end announced by upstream (SUBSCRIBE_END), if any.
        self.end_sequence: int | None = None
        self.groups_total = 0
        self.bytes_total = 0
        # Datagrams (lite-05+) are not cached: each is handed to the current listeners at once.
        self._datagram_listeners: set[DatagramListener] = set()
        self.datagrams_total = 0
        # What the subscribers want of this track, and the max latency the upstream subscription
        # last asked the publisher for (None until it asked).
        self.demand = Demand()
        self.upstream_latency_ms: int | None = None
        # After the request grew, groups already under way were served under the old one.
        self._earlier_request: tuple[int, int] | None = None  # (latest sequence then, latency)

    # -- info ---------------------------------------------------------------------------
    def set_info(self, info: TrackInfo) -> None:
        self.info = info
        self._info_ready.set()

    async def wait_info(self) -> TrackInfo:
        await self._info_ready.wait()
        assert self.info is not None
        return self.info

    # -- writer side (the one upstream subscription) -------------------------------------
    def create_group(self, sequence: int) -> Group | None:
        """A new group from upstream; None if it is a duplicate or beyond the end."""
        if self.closed or sequence in self.groups:
            return None
        if self.end_sequence is not None and sequence >= self.end_sequence:
            return None
        if self.latest is not None and sequence < self.latest.sequence and self._too_old(sequence):
            return None
        group = Group(sequence, self._budget, self._changed.notify, self.traffic, self.meter)
        self.groups[sequence] = group
        if self.latest is None or sequence > self.latest.sequence:
            self.latest = group
        self._arrivals.append(sequence)
        self._arrival_count += 1
        if self._first_arrival is None:
            self._first_arrival = group.arrived
        elif group.arrived - self._last_arrival <= BURST_QUIET:
            if self._burst_start is None:
                self._burst_start = self._last_arrival
        else:
            self._burst_start = None
        self._last_arrival = group.arrived
        self.groups_total += 1
        self.traffic.groups_in += 1
        self.meter.groups += 1
        self._evict()
        self._changed.notify()
        return group

    def _too_old(self, sequence: int) -> bool:
        # Groups travel on parallel streams, so a slightly older one may arrive after a newer
        # one and is still wanted; only one far behind the cache's reach is not.
        assert self.latest is not None
        return self.latest.sequence - sequence > MAX_CACHED_GROUPS

    def _retention(self) -> float:
        ms = self.info.max_latency_ms if self.info is not None else DEFAULT_MAX_LATENCY_MS
        age = ms / 1000.0
        if self._budget is not None and self._budget.max_age is not None:
            age = min(age, self._budget.max_age)
        return age

    def _evict(self) -> None:
        """Drop stale non-latest groups: past the retention window, the count cap or the budget."""
        latest = self.latest
        if latest is None:
            return
        horizon = latest.arrived - self._retention()
        over_budget = self._budget is not None and self._budget.over
        for seq in sorted(self.groups):
            group = self.groups[seq]
            if group is latest:
                continue
            if group.arrived < horizon or len(self.groups) > MAX_CACHED_GROUPS or over_budget:
                del self.groups[seq]
                group.release()
                over_budget = self._budget is not None and self._budget.over
            else:
                break

    def settling(self, first: bool) -> float:
        """Seconds to wait before choosing among the groups that arrived (0: choose now).

        Groups that arrive together reach the relay one stream at a time, in any order (one per
        message over WebSocket): a fresh upstream subscription is answered with every group the
        publisher holds (the Rust publisher does so on lite-06 even for max latency 1 ms), and a
        publisher catching up sends a run of them. Choosing the newest before such a burst is in
        would start an old group. `first`: the choice of a subscriber's first group, which also
        waits out the answer to a fresh subscription."""
        if self._first_arrival is None:
            return 0.0
        now = time.monotonic()
        until = 0.0
        if first and now < self._first_arrival + FRESH_MAX:
            until = min(self._first_arrival + FRESH_MAX, self._last_arrival + FRESH_QUIET)
        if self._burst_start is not None:
            until = max(until, min(self._burst_start + BURST_MAX, self._last_arrival + BURST_QUIET))
        return max(0.0, until - now)

    def discard(self, group: Group) -> bool:
        """Drop one group from the cache (it will not be served again); False if it is the latest
        or no longer cached. Whoever is sending it holds it and carries on."""
        if self.groups.get(group.sequence) is group and group is not self.latest:
            del self.groups[group.sequence]
            group.release()
            return True
        return False

    def stale(self, group: Group, max_latency_ms: int) -> bool:
        """Whether `group` is no longer worth delivering under `max_latency_ms` (lite §7.3).

        Only a group with a newer one is ever stale. Max latency 0 means only the newest group is
        worth it; otherwise a group is stale once it is more than max latency older than the newest,
        by wall-clock arrival or by the timestamps of their first frames (lite-05+; either one)."""
        latest = self.latest
        if latest is None or group.sequence >= latest.sequence:
            return False
        if max_latency_ms <= 0:
            return True
        if (latest.arrived - group.arrived) * 1000.0 > max_latency_ms:
            return True
        if group.frames and latest.frames:
            scale = self.info.timescale if self.info is not None and self.info.timescale else 1000
            return (latest.frames[0].timestamp - group.frames[0].timestamp) * 1000.0 / scale > max_latency_ms
        return False

    def asked_upstream(self, max_latency_ms: int) -> None:
        """The upstream subscription now asks the publisher for `max_latency_ms`."""
        previous = self.upstream_latency_ms
        if previous is not None and max_latency_ms > previous:
            self._earlier_request = (self.latest.sequence if self.latest is not None else -1, previous)
        self.upstream_latency_ms = max_latency_ms

    def maybe_cut_short(self, group: Group) -> bool:
        """Whether the publisher's FIN of `group` may have come early.

        Asked for max latency 0, the Rust publisher sometimes stops sending a group when the next
        one starts and FINs its stream as if the group were whole (moq-rs 0.5.1; never seen at
        1 ms or more, which is why upstream requests never ask for 0 where the wire has a max
        latency; lite-01/02 have none, and there the Rust publisher serves 0). A group whose FIN
        comes after a newer group started is then dropped rather than cached and served as
        complete: it is stale for every subscriber anyway."""
        latency = self.upstream_latency_ms or 0
        if self._earlier_request is not None and group.sequence <= self._earlier_request[0]:
            latency = min(latency, self._earlier_request[1])
        return latency == 0 and self.stale(group, 0)

    def end(self, sequence: int) -> None:
        """Upstream said no group >= sequence will exist."""
        if self.end_sequence is None or sequence < self.end_sequence:
            self.end_sequence = sequence
            self._changed.notify()

    def close(self, error: int | None = None) -> None:
        """No more groups will arrive. Groups in flight keep their own state."""
        if self.closed:
            return
        self.closed = True
        self.error = error
        if error is not None:
            for group in self.groups.values():
                if not group.done:
                    group.abort(error)
        if not self._info_ready.is_set():
            self._info_ready.set()
        self._changed.notify()

    def drop_cache(self) -> None:
        for group in self.groups.values():
            group.release()
        self.groups.clear()

    # -- reader side ---------------------------------------------------------------------
    def cached(self, sequence: int) -> Group | None:
        return self.groups.get(sequence)

    @property
    def arrival_cursor(self) -> int:
        """The cursor value that will see the next group to arrive."""
        return self._arrival_count

    def cached_in_arrival_order(self) -> tuple[int, list[Group]]:
        """(cursor after them, cached groups still in arrival history) for a new subscriber."""
        return self._arrival_count, [self.groups[s] for s in self._arrivals if s in self.groups]

    def arrivals_since(self, cursor: int) -> tuple[int, list[Group]]:
        """Groups that arrived at or after `cursor` (older history is skipped), and the new cursor."""
        first = self._arrival_count - len(self._arrivals)
        start = max(cursor, first)
        seqs = list(self._arrivals)[start - first :] if start < self._arrival_count else []
        return self._arrival_count, [self.groups[s] for s in seqs if s in self.groups]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def wake(self) -> None:
        """Wake the readers waiting on this track: something outside it (a better route) changed
        what one of them should do."""
        self._changed.notify()

    # -- datagrams ----------------------------------------------------------------------------
    def push_datagram(self, sequence: int, timestamp: int, payload: bytes) -> None:
        """A one-frame group that arrived as a datagram: forward to every listener, keep nothing."""
        if self.closed:
            return
        self.datagrams_total += 1
        self.traffic.datagrams_in += 1
        self.meter.bytes += len(payload)
        self.traffic.datagrams_out += len(self._datagram_listeners)
        for listener in list(self._datagram_listeners):
            listener(sequence, timestamp, payload)

    def add_datagram_listener(self, listener: DatagramListener) -> None:
        self._datagram_listeners.add(listener)

    def remove_datagram_listener(self, listener: DatagramListener) -> None:
        self._datagram_listeners.discard(listener)
