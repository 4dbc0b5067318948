"""Datagrams (lite-05+) relayed end to end between real moq-rs clients, QUIC and WebTransport."""

from __future__ import annotations

import asyncio

import moq
import pytest
import trio
from harness import Flag, client, in_thread, running_relay

CASES = [(t, v) for t in ("moql", "https") for v in ("moq-lite-05", "moq-lite-06")]


@pytest.mark.parametrize(("transport", "version"), CASES, ids=[f"{t}-{v[-2:]}" for t, v in CASES])
async def test_datagrams_end_to_end(tmp_path, transport, version) -> None:
    done = Flag()
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("dg")
                t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=5_000_000, timescale=1000))
                b.announce()
                n = 0
                while not done.event.is_set():
                    t.append_datagram(b"dg-%d" % n, n * 1000)
                    n += 1
                    await asyncio.sleep(0.05)

        async def subscriber() -> list:
            async with client(url) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("dg"), 10)
                track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=5_000_000))
                got = []
                while len(got) < 5:
                    got.append(await asyncio.wait_for(track.recv_datagram(), 10))
                done.set()
                return got

        result: list = []
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(subscriber))
                n.start_soon(sub)
    assert len(result) == 5
    seqs = [d.sequence for d in result]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    for d in result:
        n = int(d.payload.split(b"-")[1])
        assert d.payload == b"dg-%d" % n
        assert d.timestamp_us == n * 1000  # timescale 1000: whole milliseconds survive
