"""FETCH of one past group (lite-05/06) by the real client: from the relay's cache, or pulled
from the publisher when the relay does not hold it."""

from __future__ import annotations

import asyncio

import moq
import pytest
import trio
from harness import Flag, client, free_port, in_thread, running_relay, wait_until
from test_internal import internal_extra, scrape, traffic

CASES = [(t, v) for t in ("moql", "https") for v in ("moq-lite-05", "moq-lite-06")]


@pytest.mark.parametrize(("transport", "version"), CASES, ids=[f"{t}-{v[-2:]}" for t, v in CASES])
async def test_fetch_group(tmp_path, transport, version) -> None:
    published = Flag()
    stop = Flag()
    async with running_relay(tmp_path, version, extra=internal_extra(free_port())) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("vod")
                t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
                b.announce()
                for g in range(5):
                    group = t.append_group()
                    group.write_frame(b"g%d-a" % g, g * 1000)
                    group.write_frame(b"g%d-b" % g, g * 1000 + 10)
                    group.finish()
                published.set()
                await stop.wait(40)

        async def fetcher() -> list[list[bytes]]:
            await published.wait()
            async with client(url) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("vod"), 10)
                out = []
                for seq in (2, 0):
                    group = await asyncio.wait_for(consumer.fetch_group("v", seq), 10)
                    out.append([f.payload async for f in group])
                try:
                    missing = await asyncio.wait_for(consumer.fetch_group("v", 99), 10)
                    out.append([f.payload async for f in missing])
                except (TimeoutError, moq.Error):
                    out.append(None)
                return out

        result: list = []
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)
                try:
                    await wait_until(lambda: relay.handle.origin.best("anon/vod") is not None)
                    result.extend(await in_thread(fetcher))
                    samples = await scrape(relay.handle.internal[0])
                finally:
                    stop.set()
    # Every FETCH asked counts, the one refused too; only on the egress side, as in Rust.
    assert traffic(samples, "fetches", "publisher") == 3
    assert traffic(samples, "fetches", "subscriber") == 0
    assert traffic(samples, "viewers_opened", "publisher") == 0  # a fetch makes nobody a viewer
    # Nobody subscribed through the relay, so both groups came from the publisher by FETCH.
    assert result[:2] == [[b"g2-a", b"g2-b"], [b"g0-a", b"g0-b"]]
    assert result[2] is None  # a group the publisher does not have: refused, not hung
