"""The stats broadcast, `[stats] node`: the relay's cumulative counters as a MoQ broadcast.

`.stats/node/<node>` is published in the relay's own origin, so it is read (and travels over
cluster links) like any broadcast, behind the reserved-prefix rules: only a grant naming `.stats`
sees or subscribes to it. The shape follows the Rust relay's `moq-stats` crate: JSON tracks whose
frames are objects of cumulative counters, one group of one frame per interval.

- `publisher.json`: egress, what this relay sent to subscribers;
- `subscriber.json`: ingress, what it received from publishers;
- `sessions.json`: sessions started and ended.

Rust keys each frame by broadcast path (traffic) or auth root (sessions); this relay counts per
relay, not per path, so every frame has one entry, `""` (the root: everything). Counter names are
Rust's (`bytes`, `frames`, `groups`, `datagrams`, `subscriptions`, `subscriptions_closed`,
`sessions`, `sessions_closed`, `fetches`, `broadcasts`, `broadcasts_closed`: the last two are
viewers, distinct (broadcast, session) pairs), with the 0.15 `*_started` / `*_ended` spellings
alongside, as 0.15's feed writes both. Rust's `announced*` are not counted here and are left out
(its reader takes a missing counter as 0).

The counters are read from the objects `/metrics` reads (the origin's `Traffic`, the admission
`Sessions`): nothing is counted twice. The broadcast has its own `Traffic`, so the feed's own
frames do not show up in the counters it reports.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from relay.model import path as paths
from relay.model.broadcast import Broadcast
from relay.model.origin import Origin
from relay.model.track import Frame, Track, TrackInfo
from relay.model.traffic import Traffic
from relay.protocol.lite.errors import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from relay.admission import Sessions

log = logging.getLogger("relay.stats")

PREFIX = ".stats"
INTERVAL = 1.0  # seconds between groups (Rust's `[stats] interval` default)
PUBLISHER_TRACK = "publisher.json"
SUBSCRIBER_TRACK = "subscriber.json"
SESSIONS_TRACK = "sessions.json"
TRACKS = (PUBLISHER_TRACK, SUBSCRIBER_TRACK, SESSIONS_TRACK)
# The one entry per frame: counters are relay-wide, so they sit under the root path.
ROOT_KEY = ""


def broadcast_path(node: str) -> str:
    """`relay-1` -> `.stats/node/relay-1` (a multi-segment node, `sjc/1`, nests)."""
    return paths.join(PREFIX, paths.join("node", paths.norm(node)))


def _traffic_entry(bytes_: int, frames: int, groups: int, datagrams: int, opened: int, closed: int,
                   fetches: int = 0, viewers: int = 0, viewers_closed: int = 0) -> dict[str, int]:
    return {"bytes": bytes_, "frames": frames, "groups": groups, "datagrams": datagrams,
            "subscriptions": opened, "subscriptions_closed": closed,
            "subscriptions_started": opened, "subscriptions_ended": closed,
            "fetches": fetches, "broadcasts": viewers, "broadcasts_closed": viewers_closed}


def snapshot(traffic: Traffic, sessions_opened: int, sessions_closed: int) -> dict[str, bytes]:
    """Each track's frame for the counters as they stand: track name -> JSON payload."""
    t = traffic
    # Egress: to subscribers, whose subscriptions are the downstream ones; ingress: the reverse.
    # Rust's `broadcasts` / `broadcasts_closed` are its viewers (distinct broadcast, session), and
    # like `fetches` exist on the egress side only (0 on ingress).
    egress = _traffic_entry(t.bytes_out, t.frames_out, t.groups_out, t.datagrams_out,
                            t.downstream_opened, t.downstream_closed, t.fetches, t.viewers_opened, t.viewers_closed)
    ingress = _traffic_entry(t.bytes_in, t.frames_in, t.groups_in, t.datagrams_in,
                             t.upstream_opened, t.upstream_closed)
    presence = {"sessions": sessions_opened, "sessions_closed": sessions_closed,
                "sessions_started": sessions_opened, "sessions_ended": sessions_closed}
    frames: dict[str, Any] = {PUBLISHER_TRACK: egress, SUBSCRIBER_TRACK: ingress, SESSIONS_TRACK: presence}
    return {name: json.dumps({ROOT_KEY: entry}, separators=(",", ":")).encode() for name, entry in frames.items()}


class StatsFeed:
    """The in-process source of the stats broadcast: each interval it writes the current
    snapshot as a new group into every track someone reads (a new reader gets the latest one at
    once). Runs in the relay's nursery; the broadcast leaves the origin when it stops."""

    def __init__(self, origin: Origin, sessions: Sessions, node: str, interval: float = INTERVAL) -> None:
        self.origin = origin
        self.sessions = sessions
        self.path = broadcast_path(node)
        self.interval = interval
        self.sequence = -1  # the latest group's; -1 before the first tick
        self.latest: dict[str, bytes] = {}
        self.latest_timestamp = 0
        self._served: dict[str, set[Track]] = {name: set() for name in TRACKS}

    # -- TrackSource -----------------------------------------------------------------------
    def serve_track(self, track: Track) -> Callable[[], None]:
        served = self._served.get(track.name)
        if served is None:
            track.close(ErrorCode.NOT_FOUND)
            return lambda: None
        track.set_info(TrackInfo())
        served.add(track)
        if self.sequence >= 0:
            self._write(track, self.sequence)
        return lambda: served.discard(track)

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        if name not in self._served:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"the stats broadcast has no track {name!r}")
        return TrackInfo()

    async def fetch_group(self, broadcast_path: str, name: str, sequence: int, priority: int = 0):
        # Only the groups still cached are served (the relay answers those itself).
        raise ProtocolError(ErrorCode.NOT_FOUND, "old stats groups are not kept")
        yield  # pragma: no cover

    # -- the feed --------------------------------------------------------------------------
    def tick(self) -> None:
        """Take a snapshot and write it as the next group of every track being read."""
        self.sequence += 1
        self.latest = snapshot(self.origin.traffic, self.sessions.opened_total, self.sessions.closed_total)
        self.latest_timestamp = int(time.time() * 1000)  # unix ms, in the default 1000 Hz timescale
        for tracks in self._served.values():
            for track in list(tracks):
                self._write(track, self.sequence)

    def _write(self, track: Track, sequence: int) -> None:
        group = track.create_group(sequence)
        if group is None:
            return  # this reader has the group already
        group.append(Frame(self.latest[track.name], self.latest_timestamp))
        group.finish()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        broadcast = Broadcast(self.path, self, traffic=Traffic())
        self.tick()
        self.origin.publish(broadcast)
        log.info("stats: publishing %s every %gs", self.path, self.interval)
        task_status.started()
        try:
            # Deadlines, not sleeps, so that the groups stay `interval` apart however long a tick takes.
            deadline = trio.current_time()
            while True:
                deadline += self.interval
                await trio.sleep_until(deadline)
                self.tick()
        finally:
            self.origin.unpublish(broadcast)
            broadcast.close()
