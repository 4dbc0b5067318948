"""Traffic counters: what arrived from publishers and what left for subscribers.

One `Traffic` per origin, and one `Meter` per broadcast (what its publisher sent, for the
dashboard's bitrate). Counts are taken where the data passes once: a group when the track
creates it or a fan-out opens its stream, a frame when a group appends it or a fan-out writes it,
a datagram when the track hands it out. `/metrics` reads them at scrape time.
"""

from __future__ import annotations


class Traffic:
    __slots__ = ("bytes_in", "frames_in", "groups_in", "datagrams_in",
                 "bytes_out", "frames_out", "groups_out", "datagrams_out", "drops",
                 "upstream_opened", "upstream_closed", "downstream_opened", "downstream_closed",
                 "fetches", "viewers_opened", "viewers_closed",
                 "stale_groups", "stale_frames", "stale_bytes", "stale_datagrams")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.frames_in = 0
        self.groups_in = 0
        self.datagrams_in = 0
        self.bytes_out = 0
        self.frames_out = 0
        self.groups_out = 0
        self.datagrams_out = 0
        # Subscriptions: to publishers (one per shared track) and from subscribers (one per
        # reader of a track, a failover to another route counting as a new one).
        self.upstream_opened = 0
        self.upstream_closed = 0
        self.downstream_opened = 0
        self.downstream_closed = 0
        # One-shot group fetches asked of this relay (lite FETCH, each group of an IETF FETCH,
        # HTTP /fetch), counted when asked, found or not.
        self.fetches = 0
        # Viewers: distinct (broadcast, session) pairs with a subscription; the first of a
        # session's subscriptions to a broadcast opens one, its last closes it.
        self.viewers_opened = 0
        self.viewers_closed = 0
        # Content a subscriber did not get because it drifted past its latency budget: groups
        # skipped before they started or aborted under way, with the frames and bytes not sent.
        # Datagrams are forwarded as they arrive, never held, so none goes stale (0).
        self.stale_groups = 0
        self.stale_frames = 0
        self.stale_bytes = 0
        self.stale_datagrams = 0
        # Groups not delivered to a subscriber, by reason ("stale", "inflight").
        self.drops: dict[str, int] = {}

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def went_stale(self, frames: int, payload: int) -> None:
        """A group past a subscriber's budget was given up with `frames` (`payload` bytes) unsent."""
        self.stale_groups += 1
        self.stale_frames += frames
        self.stale_bytes += payload


class Meter:
    """What one broadcast's publisher delivered: payload bytes (frames and datagrams), frames
    and groups. Its tracks and groups add to it where `Traffic` is counted, so it outlives the
    tracks (a track nobody reads any more is dropped, its bytes are not)."""

    __slots__ = ("bytes", "frames", "groups")

    def __init__(self) -> None:
        self.bytes = 0
        self.frames = 0
        self.groups = 0
