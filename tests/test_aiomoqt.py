"""aiomoqt 0.5.3 (IETF draft-14, Python on qh3 1.9) as a real IETF peer of the relay, beside the
Rust client speaking moq-lite-06 on raw QUIC: media each way, bytes and order checked.

aiomoqt runs in its own virtual environment (tests/ietf_peers/venv.py) as a subprocess, over
WebTransport: its raw-QUIC data path strips a WebTransport stream header from every uni stream,
and its publisher writes WebTransport streams only (spec moq-transport §1.6).
"""

from __future__ import annotations

import asyncio

import moq
import trio
from harness import Flag, client, in_thread, publish_until, running_relay, wait_until
from ietf_peers.driver import aiomoqt_peer

IETF = "moq-transport-14"
LITE = "moq-lite-06"
VERSIONS = {"quic": [LITE]}  # WebTransport unrestricted: aiomoqt offers only moq-00 there



def sessions(relay) -> set[tuple[str, str]]:
    return {(s.transport.info.transport, s.version.name_str) for s in relay.handle.sessions}


async def test_aiomoqt_publisher_to_rust_lite_subscriber(tmp_path, aiomoqt_python) -> None:
    groups, frames = 5, 4
    async with running_relay(tmp_path, None, transport_versions=VERSIONS) as relay:
        args = ["--port", str(relay.port), "--endpoint", "anon", "--namespace", "aio", "--track", "v",
                "--groups", str(groups), "--frames", str(frames), "--period", "0.1"]
        async with aiomoqt_peer(aiomoqt_python, "aiomoqt_publish.py", args, tmp_path / "aiomoqt.log") as pub:
            with trio.fail_after(20):
                await pub.wait_for("announced")
            seen: set[tuple[str, str]] = set()

            async def subscriber() -> list[tuple[int, list[bytes]]]:
                async with client(relay.url("moql", "anon")) as c:
                    consumer = await asyncio.wait_for(c.announced_broadcast("aio"), 10)
                    track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                    seen.update(sessions(relay))
                    out = []
                    for _ in range(groups):
                        group = await asyncio.wait_for(track.next_group(), 10)
                        out.append((group.sequence, [f.payload async for f in group]))
                    return out

            with trio.fail_after(40):
                result = await in_thread(subscriber)
            with trio.fail_after(5):
                subscribe = await pub.wait_for("subscribe")  # printed before the groups
    assert seen == {("webtransport", IETF), ("quic", LITE)}
    assert subscribe["track"] == "v" and subscribe["filter"] == 0x1  # NextGroupStart (README)
    assert [seq for seq, _ in result] == list(range(groups))
    for g, (_, payloads) in enumerate(result):
        assert payloads == [b"g%df%d" % (g, f) for f in range(frames)]


async def test_rust_lite_publisher_to_aiomoqt_subscriber(tmp_path, aiomoqt_python) -> None:
    frames, wanted = 3, 5
    stop = Flag()
    async with running_relay(tmp_path, None, transport_versions=VERSIONS) as relay:
        async with trio.open_nursery() as n:

            async def publish() -> None:
                await in_thread(lambda: publish_until(
                    relay.url("moql", "anon"), "rust", stop, period=0.1,
                    frames=lambda g: [b"n%d-f%d" % (g, f) for f in range(frames)]))
            n.start_soon(publish)
            await wait_until(lambda: relay.handle.origin.best("anon/rust") is not None, 15)
            args = ["--port", str(relay.port), "--endpoint", "anon", "--prefix", "rust",
                    "--namespace", "rust", "--track", "v"]
            objects: dict[int, list[tuple[int, bytes]]] = {}
            try:
                async with aiomoqt_peer(aiomoqt_python, "aiomoqt_subscribe.py", args,
                                        tmp_path / "aiomoqt.log") as sub:
                    with trio.fail_after(30):
                        await sub.wait_for("subscribed")
                        assert ("webtransport", IETF) in sessions(relay)
                        # Until `wanted` groups are complete after the first one seen.
                        while sum(len(v) == frames for v in objects.values()) < wanted:
                            event = await sub.wait_for("object")
                            objects.setdefault(event["group"], []).append(
                                (event["object"], bytes.fromhex(event["payload"])))
            finally:
                stop.set()
    ids = sorted(objects)
    complete = [g for g in ids if len(objects[g]) == frames]
    # The latest group from its first object, then every later one, in order.
    assert complete[:wanted] == list(range(ids[0], ids[0] + wanted)), ids
    for g in complete:
        assert objects[g] == [(f, b"n%d-f%d" % (g, f)) for f in range(frames)], objects[g]
