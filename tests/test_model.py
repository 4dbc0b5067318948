"""The relay model without any network: sharing, caching, eviction, announcements."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relay.model import path as paths
from relay.model.broadcast import Broadcast
from relay.model.cache import CacheBudget
from relay.model.origin import Origin
from relay.model.subscription import Wish, combine
from relay.model.track import (
    MAX_GROUP_FRAMES,
    MAX_GROUP_SIZE,
    Frame,
    GroupAborted,
    TooLarge,
    Track,
    TrackInfo,
)


class FakeSource:
    def __init__(self) -> None:
        self.served: list[Track] = []
        self.cancelled: list[Track] = []

    def serve_track(self, track: Track):
        self.served.append(track)
        return lambda: self.cancelled.append(track)


def test_paths() -> None:
    assert paths.norm("/a//b/") == "a/b" and paths.norm("/") == ""
    assert paths.has_prefix("foo/bar", "foo") and not paths.has_prefix("foobar", "foo")
    assert paths.has_prefix("x", "")
    assert paths.strip("a/b/c", "a") == "b/c" and paths.strip("a", "a") == ""
    assert paths.strip("ab", "a") is None
    assert paths.join("", "x") == "x" and paths.join("a", "") == "a" and paths.join("a", "b") == "a/b"


def test_one_upstream_subscription_per_track() -> None:
    src = FakeSource()
    b = Broadcast("live", src)
    with b.subscribe("video") as s1, b.subscribe("video") as s2, b.subscribe("audio") as s3:
        assert s1.track is s2.track and s1.track is not s3.track
        assert len(src.served) == 2
        assert b.upstream_count() == 2
    assert len(src.cancelled) == 2 and b.upstream_count() == 0
    assert s1.track.closed


def test_viewers_are_distinct_sessions_per_broadcast() -> None:
    """A session's first subscription to a broadcast makes it a viewer, its last ends that; a
    subscription without a viewer (HTTP /fetch) is none. The counts are Rust's viewers_*."""
    b = Broadcast("live", FakeSource())
    alice, bob = object(), object()
    t = b.traffic
    with b.subscribe("video", viewer=alice), b.subscribe("audio", viewer=alice):
        assert (t.viewers_opened, t.viewers_closed) == (1, 0)
        with b.subscribe("video", viewer=bob) as s, b.subscribe("video"):
            assert s.viewer is bob and (t.viewers_opened, t.viewers_closed) == (2, 0)
        assert (t.viewers_opened, t.viewers_closed) == (2, 1)
        with b.subscribe("audio", viewer=alice):
            assert t.viewers_opened == 2  # alice still views
    assert (t.viewers_opened, t.viewers_closed) == (2, 2)
    assert t.downstream_opened == t.downstream_closed == 5


def test_a_closed_broadcast_gives_its_cache_back_when_its_last_reader_leaves() -> None:
    """The publisher leaves while readers still hold its tracks: they may still be sent the cached
    groups, and when the last one leaves, those groups' bytes leave the cache budget (they used to
    stay counted for good, leaving a `cache.capacity` budget over forever)."""
    budget = CacheBudget()
    b = Broadcast("live", FakeSource(), budget=budget)
    with b.subscribe("video") as s1, b.subscribe("video"):
        group = s1.track.create_group(0)
        assert group is not None
        group.append(Frame(b"x" * 100, 0))
        group.finish()
        assert budget.used == 100
        b.close()
        assert s1.track.closed and s1.track.cached(0) is group  # still there for its readers
        assert budget.used == 100
    assert budget.used == 0 and s1.track.cached(0) is None


async def test_group_readers_share_frames() -> None:
    track = Track("b", "t")
    group = track.create_group(0)
    assert group is not None
    got: list[list[bytes]] = [[], []]

    async def reader(i: int) -> None:
        async for frame in group.frames_from(0):
            got[i].append(frame.payload)

    async with trio.open_nursery() as n:
        n.start_soon(reader, 0)
        n.start_soon(reader, 1)
        await trio.sleep(0)
        for k in range(5):
            group.append(Frame(b"f%d" % k, k))
            await trio.sleep(0)
        group.finish()
    assert got[0] == got[1] == [b"f0", b"f1", b"f2", b"f3", b"f4"]
    # The same bytes object is handed to every reader: no copy per subscriber.
    assert group.frames[0].payload is group.frames[0].payload


async def test_aborted_group_raises() -> None:
    track = Track("b", "t")
    group = track.create_group(3)
    assert group is not None
    group.append(Frame(b"x"))
    group.abort(2)
    try:
        async for _ in group.frames_from(0):
            pass
    except GroupAborted as exc:
        assert exc.code == 2
    else:
        raise AssertionError("expected GroupAborted")


def test_a_group_is_bounded_in_bytes_and_in_frames() -> None:
    """Empty frames add nothing to a group's size: the frame count bounds them (otherwise one
    group of empty frames grows for ever). Past either limit the append is refused, the group
    holds what it had, and the receiving session aborts it (relay/protocol/*/subscriber.py)."""
    track = Track("b", "t")
    group = track.create_group(0)
    assert group is not None
    for _ in range(MAX_GROUP_FRAMES):
        group.append(Frame(b""))
    with pytest.raises(TooLarge, match=f"{MAX_GROUP_FRAMES} frames"):
        group.append(Frame(b""))
    assert len(group.frames) == MAX_GROUP_FRAMES
    big = track.create_group(1)
    assert big is not None
    big.append(Frame(bytes(MAX_GROUP_SIZE - 1)))
    with pytest.raises(TooLarge, match=f"{MAX_GROUP_SIZE} bytes"):
        big.append(Frame(b"xy"))
    assert big.size == MAX_GROUP_SIZE - 1


def test_cache_keeps_latest_and_evicts_by_budget_and_age() -> None:
    budget = CacheBudget(capacity=250)
    track = Track("b", "t", budget)
    track.set_info(TrackInfo(max_latency_ms=60_000))
    for seq in range(5):
        g = track.create_group(seq)
        assert g is not None
        g.append(Frame(b"x" * 100))
        g.finish()
    # Budget 250 bytes of 100-byte groups: old groups went, the latest always stays.
    assert track.latest is not None and track.latest.sequence == 4
    assert 4 in track.groups and len(track.groups) <= 3
    assert budget.used <= 300
    # Age: with a zero window only the latest survives.
    track2 = Track("b", "t2")
    track2.set_info(TrackInfo(max_latency_ms=0))
    for seq in range(3):
        track2.create_group(seq)
    assert list(track2.groups) == [2]
    # Duplicates are refused; a straggler (parallel streams reorder) is still taken.
    assert track2.create_group(2) is None and track2.create_group(0) is not None
    assert track2.create_group(2 + 2000) is not None and track2.create_group(5) is None  # far behind


def test_arrival_cursor() -> None:
    track = Track("b", "t")
    cursor = track.arrival_cursor
    track.create_group(10)
    track.create_group(12)
    cursor, new = track.arrivals_since(cursor)
    assert [g.sequence for g in new] == [10, 12]
    track.create_group(11)
    cursor, new = track.arrivals_since(cursor)
    assert [g.sequence for g in new] == [11]
    assert track.arrivals_since(cursor)[1] == []


async def test_origin_routes_and_watchers() -> None:
    origin = Origin(max_broadcasts=2)
    a = Broadcast("room/a", FakeSource())
    with origin.watch("room") as w:
        origin.publish(a)
        changes = await w.changes()
        assert changes == [("room/a", a)]
        a2 = Broadcast("room/a", FakeSource())
        origin.publish(a2)  # a republish replaces
        assert origin.best("room/a") is a2
        origin.unpublish(a2)
        assert origin.best("room/a") is a  # the earlier one takes over again
        origin.publish(Broadcast("other/x", FakeSource()))  # outside the prefix: not seen
        changes = await w.changes()
        assert changes == [("room/a", a)]
        try:
            origin.publish(Broadcast("third", FakeSource()))
        except Exception as exc:  # the origin's broadcast limit
            assert "2 broadcasts" in str(exc)
        else:
            raise AssertionError("limit not enforced")
    looped = Broadcast("room/b", FakeSource(), hops=(7, 9))
    origin.unpublish(a)
    origin.publish(looped)
    assert origin.best("room/b", exclude_hop=9) is None
    assert origin.best("room/b", exclude_hop=5) is looped
    with trio.move_on_after(0.05):
        await origin.wait_broadcast("nope")
        raise AssertionError("should not find it")


def test_demand_combines_what_subscribers_want() -> None:
    assert combine([]) is None
    one = Wish(priority=3, max_latency_ms=0)
    assert combine([one]) == one
    # Highest priority, largest max latency, earliest explicit start, furthest end (None wins).
    both = combine([Wish(priority=3, max_latency_ms=0, start=None, end=10),
                    Wish(priority=9, max_latency_ms=500, start=7, end=12, ordered=True)])
    assert both == Wish(priority=9, ordered=False, max_latency_ms=500, start=7, end=12)
    assert combine([Wish(start=4), Wish(start=2)]).start == 2
    assert combine([Wish(end=4), Wish(end=None)]).end is None
    assert combine([Wish(ordered=True), Wish(ordered=True)]).ordered


async def test_demand_tracks_subscriptions_and_wakes_on_change() -> None:
    src = FakeSource()
    b = Broadcast("live", src)
    with b.subscribe("video", Wish(max_latency_ms=0)) as a:
        demand = a.track.demand
        assert demand.combined == Wish(max_latency_ms=0)
        woke: list[bool] = []

        async def watch() -> None:
            await demand.changed()
            woke.append(True)

        async with trio.open_nursery() as n:
            n.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            with b.subscribe("video", Wish(priority=5, max_latency_ms=30_000)) as bsub:
                assert bsub.track is a.track and len(demand) == 2
                assert demand.combined == Wish(priority=5, max_latency_ms=30_000)
                a.update(Wish(max_latency_ms=60_000))
                assert demand.combined.max_latency_ms == 60_000
        assert woke == [True]
        # The second reader left: the demand is the first one's (updated) wish again.
        assert demand.combined == Wish(max_latency_ms=60_000)
        a.update(Wish(max_latency_ms=60_000))  # no change: no wake-up needed
    assert len(demand) == 0


def test_stale_groups_by_latency_arrival_and_timestamps() -> None:
    track = Track("b", "t")
    track.set_info(TrackInfo(timescale=1000))
    g0 = track.create_group(0)
    assert g0 is not None and not track.stale(g0, 0)  # the newest is never stale
    g1 = track.create_group(1)
    assert g1 is not None
    # Max latency 0: only the newest group is worth delivering.
    assert track.stale(g0, 0) and not track.stale(g1, 0)
    # By arrival: g0 arrived just now too, so a generous window keeps it.
    assert not track.stale(g0, 10_000)
    g0.arrived -= 2.0
    assert track.stale(g0, 1500) and not track.stale(g0, 2500)
    # By timestamps of the first frames (lite-05+), whichever says stale first.
    g0.arrived = g1.arrived
    g0.append(Frame(b"a", 1000))
    g1.append(Frame(b"b", 4000))
    assert track.stale(g0, 2500) and not track.stale(g0, 3500)


def test_a_group_finished_after_going_stale_upstream_may_be_cut_short() -> None:
    track = Track("b", "t")
    track.asked_upstream(0)
    g0 = track.create_group(0)
    assert g0 is not None and not track.maybe_cut_short(g0)  # nothing newer: whole
    g1 = track.create_group(1)
    assert g1 is not None and track.maybe_cut_short(g0)  # asked for the newest only
    # A larger request applies to groups that start after it; those under way were served under
    # the smaller one.
    track.asked_upstream(30_000)
    assert track.maybe_cut_short(g0)
    g2 = track.create_group(2)
    g3 = track.create_group(3)
    assert g2 is not None and g3 is not None and not track.maybe_cut_short(g2)
    # Publishers asked for 1 ms or more end groups whole.
    other = Track("b", "u")
    other.asked_upstream(1)
    h0, h1 = other.create_group(0), other.create_group(1)
    assert h0 is not None and h1 is not None and not other.maybe_cut_short(h0)
    track.discard(g0)
    assert track.cached(0) is None and track.cached(3) is g3
    track.discard(g3)  # the latest group stays
    assert track.cached(3) is g3


def test_groups_arriving_together_are_chosen_among_once_the_burst_pauses(monkeypatch) -> None:
    import relay.model.track as track_module

    now = [100.0]
    monkeypatch.setattr(track_module.time, "monotonic", lambda: now[0])
    track = Track("b", "t")
    assert track.settling(first=True) == 0.0  # nothing arrived
    track.create_group(0)
    # The answer to a fresh subscription: a first group waits for the rest of the burst ...
    assert abs(track.settling(first=True) - track_module.FRESH_QUIET) < 1e-9
    assert track.settling(first=False) == 0.0  # ... a lone arrival is no burst mid-stream
    now[0] += 0.001
    track.create_group(1)  # 1 ms later: a burst
    assert abs(track.settling(first=False) - track_module.BURST_QUIET) < 1e-9
    now[0] += 0.01
    assert track.settling(first=False) == 0.0  # it paused
    # A steadily paced track (groups 20 ms apart) never waits, once past its first group.
    now[0] += track_module.FRESH_MAX
    for seq in range(2, 6):
        now[0] += 0.02
        track.create_group(seq)
        assert track.settling(first=False) == 0.0 and track.settling(first=True) == 0.0
    # A run of arrivals 1 ms apart waits at most BURST_MAX from its start.
    start = now[0] + 0.02
    for seq in range(6, 200):
        now[0] = start + (seq - 6) * 0.001
        track.create_group(seq)
    assert track.settling(first=False) == 0.0  # 194 ms of arrivals: past the 50 ms bound
