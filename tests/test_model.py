"""The relay model without any network: sharing, caching, eviction, announcements."""

from __future__ import annotations

import trio

from relay.model import path as paths
from relay.model.broadcast import Broadcast
from relay.model.cache import CacheBudget
from relay.model.origin import Origin
from relay.model.track import Frame, GroupAborted, Track, TrackInfo


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
    with b.subscribe("video") as t1, b.subscribe("video") as t2, b.subscribe("audio") as t3:
        assert t1 is t2 and t1 is not t3
        assert len(src.served) == 2
        assert b.upstream_count() == 2
    assert len(src.cancelled) == 2 and b.upstream_count() == 0
    assert t1.closed


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
