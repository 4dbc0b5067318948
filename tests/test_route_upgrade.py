"""A better route that appears while a subscription is live (relay-0.17 §5.5, relay spec §10.3).

P serves the publisher, M links to P, S links to M: S's viewer pulls over S-M-P (three hops).
Then S links to P as well: the direct route (two hops, cheaper) becomes S's best, and S tells
the lite-06 viewer with ANNOUNCE_UPDATE (same publisher: the announcement stays; a moqt-16
viewer sees no change). The viewer's subscription carries on with no error, gap or repeat, and
S moves its pull to the direct route (after the groups under way on the old one) and lets the
one through M go."""

from __future__ import annotations

import asyncio
import contextlib

import moq
import pytest
import trio
from harness import Flag, client, free_port, in_thread, publish_until, running_relay, wait_until
from test_cluster import cluster_extra


@pytest.mark.parametrize("viewer_version", [None, "moq-transport-16"], ids=["lite-06", "moqt-16"])
async def test_a_better_route_appearing_keeps_the_subscription(tmp_path, viewer_version) -> None:
    pp, pm, ps = free_port(), free_port(), free_port()
    stop, five, upgraded = Flag(), Flag(), Flag()
    async with contextlib.AsyncExitStack() as stack:
        p = await stack.enter_async_context(running_relay(tmp_path, port=pp, http=False))
        m = await stack.enter_async_context(running_relay(tmp_path, port=pm, http=False,
                                                          extra=cluster_extra(pm, connect=[pp])))
        s = await stack.enter_async_context(running_relay(tmp_path, viewer_version, port=ps, http=False,
                                                          extra=cluster_extra(ps, connect=[pm])))
        await wait_until(lambda: len(m.handle.cluster.link_sessions) == 1 and len(s.handle.cluster.link_sessions) == 1, 15)
        events: list[str] = []

        async def viewer() -> list[bytes]:
            async with client(s.url("moql", "anon")) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("up"), 15)
                track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=5_000_000))
                out = []
                try:
                    while len(out) < 20:
                        group = await asyncio.wait_for(track.next_group(), 10)
                        if group is None:
                            events.append("end")
                            break
                        out.append(b"".join([f.payload async for f in group]))
                        if len(out) == 5:
                            five.set()
                            await upgraded.wait()
                except moq.Error as exc:
                    events.append(f"error {type(exc).__name__} {exc}")
                return out

        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(p.url("moql", "anon"), "up", stop))
            try:
                with trio.fail_after(60):
                    result: list[list[bytes]] = []

                    async def run_viewer() -> None:
                        result.append(await in_thread(viewer))
                    async with trio.open_nursery() as vn:
                        vn.start_soon(run_viewer)
                        await trio.to_thread.run_sync(five.event.wait, 20)
                        assert len(s.handle.origin.best("anon/up").hops) == 3  # client, P, M
                        via_m = s.handle.origin.best("anon/up")
                        cluster = s.handle.cluster
                        cluster.set_static(cluster.parse_connect([f"https://127.0.0.1:{pm}/", f"https://127.0.0.1:{pp}/"]))
                        await wait_until(lambda: len(s.handle.origin.best("anon/up").hops) == 2, 15)
                        direct = s.handle.origin.best("anon/up")
                        # The pull moves: one upstream subscription on the direct route, none left
                        # through M (whose own pull from P ends with it).
                        await wait_until(lambda: direct.upstream_count() == 1 and via_m.upstream_count() == 0, 10)
                        at_m = m.handle.origin.best("anon/up")
                        await wait_until(lambda: at_m.upstream_count() == 0, 10)
                        upgraded.set()
            finally:
                stop.set()
        got = result[0]
        numbers = [int(g.rsplit(b"-", 1)[1]) for g in got]
        assert len(got) == 20, (events, got)
        assert not events and numbers == list(range(numbers[0], numbers[0] + len(numbers))), (events, numbers)
        await stack.aclose()
