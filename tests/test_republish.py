"""A second publisher of the same path replaces the first; when it leaves, the first is back."""

from __future__ import annotations

import asyncio

import moq
import trio
from harness import Flag, client, in_thread, running_relay, wait_until


async def test_republish_replaces_and_falls_back(tmp_path) -> None:
    second_up = Flag()
    second_leave = Flag()
    stop = Flag()
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        url = relay.url("moql", "anon")

        def publisher(tag: bytes, up: Flag | None, leave: Flag):
            async def job() -> None:
                async with client(url) as c:
                    b = c.create_broadcast("cam")
                    t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
                    b.announce()
                    if up is not None:
                        up.set()
                    while not leave.event.is_set():
                        group = t.append_group()
                        group.write_frame(tag)
                        group.finish()
                        await asyncio.sleep(0.05)
            return job

        async def watch(expect: bytes) -> bytes:
            async with client(url) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("cam"), 10)
                track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                for _ in range(20):
                    group = await asyncio.wait_for(track.next_group(), 3)
                    payload = b"".join([f.payload async for f in group])
                    if payload == expect:
                        return payload
                return payload

        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                try:
                    n.start_soon(in_thread, publisher(b"first", None, stop))
                    await wait_until(lambda: relay.handle.origin.best("anon/cam") is not None)
                    first = relay.handle.origin.best("anon/cam")
                    n.start_soon(in_thread, publisher(b"second", second_up, second_leave))
                    await wait_until(lambda: relay.handle.origin.best("anon/cam") is not first)
                    assert await in_thread(lambda: watch(b"second")) == b"second"
                    second_leave.set()
                    await wait_until(lambda: relay.handle.origin.best("anon/cam") is first)
                    assert await in_thread(lambda: watch(b"first")) == b"first"
                finally:
                    # Worker threads cannot be cancelled: tell the publishers to leave.
                    stop.set()
                    second_leave.set()
