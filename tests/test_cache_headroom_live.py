"""`[cache] headroom` on a live relay: moq-rs publishers fill the cache across two broadcasts, then
the (faked) available memory drops below the headroom and the relay gives back the oldest groups."""

from __future__ import annotations

import asyncio

import trio
from harness import Flag, client, free_port, in_thread, publish_until, read_groups, running_relay, wait_until
from test_internal import internal_extra, scrape, value

from relay import memory
from relay.model.track import Track

HEADROOM = 1 << 30
BIG = 64 * 1024  # each group of the idle broadcast
SMALL = 8 * 1024  # each group of the live one
IDLE_GROUPS = 10


async def publish_then_idle(url: str, name: str, count: int, go: Flag, stop: Flag) -> None:
    """Once `go` (the relay is subscribed), publish `count` groups, then keep the broadcast up
    without writing until `stop`."""
    import moq

    async with client(url) as c:
        b = c.create_broadcast(name)
        t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        b.announce()
        await go.wait(30)
        for n in range(count):
            group = t.append_group()
            group.write_frame(b"%s-%d|" % (name.encode(), n) + b"x" * BIG)
            group.finish()
            await asyncio.sleep(0.02)
        await stop.wait(60)


async def hold_subscription(url: str, name: str, stop: Flag) -> None:
    """Subscribe to `name` (so the relay pulls and caches it) and stay until `stop`, reading nothing."""
    import moq

    async with client(url) as c:
        consumer = await asyncio.wait_for(c.announced_broadcast(name), 15)
        sub = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
        while not stop.event.is_set():
            try:
                await asyncio.wait_for(sub.next_group(), 0.2)
            except TimeoutError:
                pass


def live_track(relay, name: str) -> Track | None:
    broadcast = relay.handle.origin.best(f"anon/{name}")
    return broadcast.live_track("v") if broadcast is not None else None


async def test_headroom_evicts_the_oldest_groups_across_broadcasts_and_keeps_the_latest(tmp_path, monkeypatch) -> None:
    # The host as the relay sees it: a fixed limit of which the cache is the only user, so each
    # group evicted gives its bytes back. Plenty until the test lowers the limit.
    host: dict[str, int | None] = {"limit": None}
    budgets = []

    def fake_available() -> int | None:
        limit = host["limit"]
        return 1 << 50 if limit is None else limit - budgets[0].used

    monkeypatch.setattr(memory, "available_memory", fake_available)
    extra = f'[cache]\nheadroom = "{HEADROOM}"\n' + internal_extra(free_port())
    go, stop = Flag(), Flag()
    async with running_relay(tmp_path, "moq-lite-05", extra=extra) as relay:
        budget = relay.handle.origin.budget
        budgets.append(budget)
        url = relay.url("moql", "anon")
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_then_idle(url, "idle", IDLE_GROUPS, go, stop))
            n.start_soon(in_thread, lambda: publish_until(url, "live", stop, period=0.1,
                                                          frames=lambda i: [b"live-%d|" % i + b"y" * SMALL]))
            n.start_soon(in_thread, lambda: hold_subscription(url, "idle", stop))
            n.start_soon(in_thread, lambda: hold_subscription(url, "live", stop))
            try:
                with trio.fail_after(60):
                    await wait_until(lambda: live_track(relay, "idle") is not None, 20)
                    go.set()
                    await wait_until(lambda: (t := live_track(relay, "idle")) is not None
                                     and len(t.groups) == IDLE_GROUPS, 20)
                    await wait_until(lambda: (t := live_track(relay, "live")) is not None and len(t.groups) >= 6, 20)
                    idle, live = live_track(relay, "idle"), live_track(relay, "live")
                    assert idle is not None and live is not None and budget.evictions == {}
                    # What is cached when memory drops, oldest arrival first.
                    before = sorted(((g.arrived, name, seq) for name, t in (("idle", idle), ("live", live))
                                     for seq, g in t.groups.items()))
                    used_before = budget.used
                    host["limit"] = used_before + HEADROOM - 3 * BIG  # three big groups short
                    # The live broadcast keeps writing, so memory stays short until every older
                    # group is gone: the idle one ends with its latest alone (groups of both
                    # broadcasts go meanwhile, in arrival order, so no count says when).
                    await wait_until(lambda: set(idle.groups) == {IDLE_GROUPS - 1}, 20)
                    assert budget.evictions.get("headroom", 0) >= IDLE_GROUPS - 1
                    # The cache gave bytes back: it holds less than when memory dropped although the
                    # live broadcast kept writing, and never its latest groups.
                    assert budget.used < used_before
                    assert idle.latest is not None and idle.groups == {IDLE_GROUPS - 1: idle.latest}
                    assert live.latest is not None and live.groups.get(live.latest.sequence) is live.latest
                    # Oldest first: of the groups cached at the drop, those gone all arrived before
                    # those still there.
                    tracks = {"idle": idle, "live": live}
                    gone = [arrived for arrived, name, seq in before if seq not in tracks[name].groups]
                    kept = [arrived for arrived, name, seq in before
                            if seq in tracks[name].groups and tracks[name].latest.sequence != seq]
                    assert gone and (not kept or max(gone) <= min(kept)), (gone, kept)
                    evicted_now = budget.evictions["headroom"]
                    # A late subscriber still gets the idle broadcast's latest group, from the cache
                    # (its publisher writes nothing more), and nothing older.
                    [first] = await in_thread(lambda: read_groups(url, "idle", 1, timeout=10))
                    assert first.startswith(b"idle-%d|" % (IDLE_GROUPS - 1))
                    samples = await scrape(relay.handle.internal[0])
                    counted = value(samples, "moq_relay_cache_evictions_total", reason="headroom")
                    assert evicted_now <= counted <= budget.evictions["headroom"]
                    assert value(samples, "moq_relay_cache_evicted_bytes_total", reason="headroom") \
                        >= (IDLE_GROUPS - 1) * BIG
            finally:
                stop.set()
