"""`[cache] headroom`, sans-IO: a fake clock and a fake available-memory reader drive CacheBudget."""

from __future__ import annotations

import logging
import time

import trio

from relay import memory
from relay.model.cache import HEADROOM_CHECK_INTERVAL, CacheBudget
from relay.model.track import Frame, Track, TrackInfo

HEADROOM = 10_000


class Host:
    """The fake host: memory available (set by the test), a clock, and how often it was read."""

    def __init__(self, available: int | None = 1 << 30) -> None:
        self.available = available
        self.now = 100.0
        self.reads = 0

    def read(self) -> int | None:
        self.reads += 1
        return self.available

    def clock(self) -> float:
        return self.now


def budget_for(host: Host, headroom: int | None = HEADROOM) -> CacheBudget:
    return CacheBudget(headroom=headroom, read_available=host.read, clock=host.clock)


def fill(budget: CacheBudget, arrivals: list[tuple[str, int, float]]) -> dict[str, Track]:
    """Tracks of 100-byte finished groups; `arrivals` = (track, sequence, arrival time) in order."""
    # Arrival times relative to now, so the tracks' own age windows (600 s here) evict nothing.
    base = time.monotonic()
    tracks: dict[str, Track] = {}
    for name, seq, arrived in arrivals:
        track = tracks.get(name)
        if track is None:
            track = tracks[name] = Track("b", name, budget)
            track.set_info(TrackInfo(max_latency_ms=600_000))  # age never evicts here
        group = track.create_group(seq)
        assert group is not None
        group.arrived = base + arrived
        group.append(Frame(b"x" * 100))
        group.finish()
    return tracks


INTERLEAVED = [("a", 0, 1.0), ("b", 0, 2.0), ("a", 1, 3.0), ("b", 1, 4.0), ("a", 2, 5.0), ("b", 2, 6.0)]


def cached(tracks: dict[str, Track]) -> dict[str, list[int]]:
    return {name: sorted(t.groups) for name, t in tracks.items()}


def test_oldest_arrivals_go_first_across_tracks_until_the_shortfall_is_covered() -> None:
    host = Host()
    budget = budget_for(host)
    tracks = fill(budget, INTERLEAVED)
    assert budget.used == 600 and budget.evictions == {}
    host.available = HEADROOM - 250  # 250 bytes short: three 100-byte groups cover it
    assert budget.relieve() == 300
    assert cached(tracks) == {"a": [2], "b": [1, 2]}  # a0, b0, a1 went, in arrival order
    assert budget.used == 300
    assert (budget.evictions, budget.evicted_bytes) == ({"headroom": 3}, {"headroom": 300})


def test_latest_groups_stay_when_nothing_else_may_go() -> None:
    host = Host()
    budget = budget_for(host)
    tracks = fill(budget, INTERLEAVED)
    host.available = 0
    assert budget.relieve() == 400
    assert cached(tracks) == {"a": [2], "b": [2]}
    assert tracks["a"].latest is tracks["a"].groups[2]
    assert budget.relieve() == 0 and budget.evictions == {"headroom": 4}  # nothing more to give


def test_arrival_not_sequence_decides() -> None:
    # Parallel streams reorder: track a's group 0 arrived after group 1, so group 1 is the stalest.
    host = Host()
    budget = budget_for(host)
    tracks = fill(budget, [("a", 1, 1.0), ("a", 0, 2.0), ("a", 2, 3.0)])
    host.available = HEADROOM - 1
    assert budget.relieve() == 100
    assert cached(tracks) == {"a": [0, 2]}


def test_nothing_is_evicted_with_enough_memory_or_no_figure_or_no_headroom() -> None:
    for available, headroom in ((HEADROOM, HEADROOM), (None, HEADROOM), (0, None)):
        host = Host(available)
        budget = budget_for(host, headroom)
        tracks = fill(budget, INTERLEAVED)
        assert budget.relieve() == 0
        assert cached(tracks) == {"a": [0, 1, 2], "b": [0, 1, 2]}, (available, headroom)
        assert budget.evictions == {}


def test_memory_is_read_at_a_bounded_cadence_on_the_write_path() -> None:
    host = Host()
    budget = budget_for(host)
    held = [fill(budget, INTERLEAVED)]  # six writes at one instant: one read (the budget's refs are weak)
    assert host.reads == 1
    host.now += HEADROOM_CHECK_INTERVAL / 2
    held.append(fill(budget, [("c", 0, 7.0), ("c", 1, 8.0)]))
    assert host.reads == 1
    host.now += HEADROOM_CHECK_INTERVAL
    host.available = 0  # memory drops: the next write after the interval evicts
    tracks = fill(budget, [("d", 0, 9.0)])
    assert host.reads == 2
    assert budget.evictions == {"headroom": 5}  # a0 a1 b0 b1 c0: every non-latest group
    assert cached(tracks) == {"d": [0]}
    # The relay's timer polls through the same gate: nothing is read again within the interval,
    # and after it an idle cache is relieved without a write.
    budget.poll()
    assert host.reads == 2
    held.append(fill(budget, [("e", 0, 10.0), ("e", 1, 11.0)]))  # within the interval: kept
    host.now += HEADROOM_CHECK_INTERVAL
    budget.poll()
    assert host.reads == 3 and sorted(held[-1]["e"].groups) == [1]
    # Without a headroom the reader is never called.
    idle = Host(0)
    fill(budget_for(idle, None), INTERLEAVED)
    assert idle.reads == 0


def test_pressure_is_logged_at_most_every_ten_seconds(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="relay.cache")
    host = Host()
    budget = budget_for(host)
    tracks = fill(budget, INTERLEAVED)
    host.available = HEADROOM - 50
    budget.relieve()  # a0
    host.now += 5
    budget.relieve()  # b0: within 10 s, not logged
    host.now += 6
    budget.relieve()  # a1: logged, with b0 and a1 counted since the first line
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.cache"]
    assert len(lines) == 2, lines
    assert "evicted 1 groups (100 bytes)" in lines[0] and f"below the headroom of {HEADROOM} by 50" in lines[0]
    assert "evicted 2 groups (200 bytes)" in lines[1] and "300 bytes still cached" in lines[1]
    assert cached(tracks) == {"a": [2], "b": [1, 2]}


async def test_a_group_being_sent_is_only_dropped_from_the_cache() -> None:
    host = Host()
    budget = budget_for(host)
    track = Track("b", "t", budget)
    track.set_info(TrackInfo(max_latency_ms=600_000))
    sending = track.create_group(0)
    assert sending is not None
    sending.append(Frame(b"first"))
    received: list[bytes] = []

    async def reader() -> None:
        async for frame in sending.frames_from(0):
            received.append(frame.payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.01)
        newer = track.create_group(1)
        assert newer is not None
        newer.append(Frame(b"y"))
        host.available = 0
        assert budget.relieve() == 5
        assert 0 not in track.groups and budget.used == 1
        sending.append(Frame(b"second"))  # the publisher carries on with it: the reader gets it
        sending.finish()
    assert received == [b"first", b"second"]
    assert budget.used == 1  # the evicted group's later bytes are not counted


def test_memory_figures(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:    8000000 kB\n")
    assert memory._meminfo_available(meminfo) == 8_000_000 * 1024
    assert memory._meminfo_available(tmp_path / "absent") is None
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("500\n")
    assert memory._cgroup_available(cgroup) is None  # no limit of its own
    (cgroup / "memory.max").write_text("1000\n")
    assert memory._cgroup_available(cgroup) == 500
    (cgroup / "memory.stat").write_text("anon 300\nfile 200\ninactive_file 150\n")
    assert memory._cgroup_available(cgroup) == 650  # reclaimable cache does not count as used
