"""A publisher on one transport and version reaches subscribers on every other (real moq-rs)."""

from __future__ import annotations

import asyncio

import moq
import pytest
import trio
from harness import Flag, client, in_thread, running_relay

# (publisher transport, subscriber transports, versions WebTransport may pick, WebSocket may pick)
CASES = [
    ("moql", ["https", "ws"], ["moql"], ["moq-lite-05"]),  # lite-06/QUIC -> lite-02/WT + lite-05/WS
    ("ws", ["moql", "https"], ["moql"], ["moq-lite-05"]),  # lite-05/WS -> lite-06/QUIC + lite-02/WT
    ("https", ["moql", "ws"], ["moql"], ["moql"]),  # lite-02/WT -> lite-06/QUIC + lite-02/WS
    ("https", ["moql", "https"], ["moq-lite-05"], None),  # lite-05/WT -> lite-06/QUIC + lite-05/WT
    ("moql", ["https", "ws"], ["moq-lite-03"], ["moq-lite-04"]),  # lite-06/QUIC -> lite-03/WT + lite-04/WS
]


@pytest.mark.parametrize(("pub", "subs", "wt", "ws"), CASES,
                         ids=["06q-02w-05s", "05s-06q-02w", "02w-06q-02s", "05w-06q", "06q-03w-04s"])
async def test_cross_version_relaying(tmp_path, pub, subs, wt, ws) -> None:
    groups = 3
    ready = Flag()
    done = Flag()
    seen_versions: set[tuple[str, str]] = set()
    versions = {"webtransport": wt} | ({"websocket": ws} if ws else {})
    async with running_relay(tmp_path, None, transport_versions=versions) as relay:

        async def publisher() -> None:
            async with client(relay.url(pub, "anon")) as c:
                b = c.create_broadcast("x")
                t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
                b.announce()
                await ready.wait(20)
                await asyncio.sleep(0.5)
                for g in range(groups):
                    group = t.append_group()
                    group.write_frame(b"%d-a" % g)
                    group.write_frame(b"%d-b" % g)
                    group.finish()
                    await asyncio.sleep(0.2)  # paced like live media: lite-02 reads as max latency 0
                await done.wait(30)

        async def subscribers() -> list[list[bytes]]:
            started = 0

            async def one(scheme: str) -> list[bytes]:
                nonlocal started
                async with client(relay.url(scheme, "anon")) as c:
                    consumer = await asyncio.wait_for(c.announced_broadcast("x"), 10)
                    track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                    first = asyncio.ensure_future(track.next_group())
                    await asyncio.sleep(0.3)
                    started += 1
                    if started == len(subs):
                        ready.set()
                    out = [b"|".join([f.payload async for f in await asyncio.wait_for(first, 20)])]
                    while len(out) < groups:
                        group = await asyncio.wait_for(track.next_group(), 20)
                        out.append(b"|".join([f.payload async for f in group]))
                    return out

            result = await asyncio.gather(*(one(s) for s in subs))
            done.set()
            return result

        result: list = []
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(subscribers))
                n.start_soon(sub)

                while not result:
                    for s in list(relay.handle.sessions):
                        seen_versions.add((s.transport.info.transport, s.version.name_str))
                    await trio.sleep(0.05)
    for got in result:
        assert got == [b"%d-a|%d-b" % (g, g) for g in range(groups)]
    def name(v: list[str]) -> str:
        return "moq-lite-02" if v == ["moql"] else v[0]

    used = {pub, *subs}
    if "moql" in used:
        assert ("quic", "moq-lite-06") in seen_versions
    if "https" in used:
        assert ("webtransport", name(wt)) in seen_versions
    if "ws" in used:
        assert ("websocket", name(ws)) in seen_versions, seen_versions
