"""The real Rust client (moq-rs) publishing and subscribing through our relay.

Every test runs for each transport (raw QUIC `moql://`, WebTransport `https://`) with the relay
restricted to each moq-lite version it claims, over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import harness
import moq
import pytest
import trio
from harness import (
    LONG_MS,
    TRANSPORTS,
    VERSIONS,
    Flag,
    client,
    in_thread,
    running_relay,
    spawn_python,
    vnum,
    wait_until,
)

from relay.transport.engines import available

LONG_US = LONG_MS * 1000
# Every transport x version on the default engine, plus a slice on qh3 (`[server.quic] engine`):
# both QUIC transports, the newest versions and the legacy in-band SETUP. WebSocket has no QUIC.
QH3_CASES = [("moql", "moq-lite-06"), ("moql", "moql"), ("https", "moq-lite-06"), ("https", "moq-lite-05")]
CASES = [(t, v, harness.ENGINE) for t in TRANSPORTS for v in VERSIONS]
if harness.ENGINE != "qh3" and available("qh3"):
    CASES += [(t, v, "qh3") for t, v in QH3_CASES if t in TRANSPORTS and v in VERSIONS]
pytestmark = pytest.mark.parametrize(
    ("transport", "version", "engine"), CASES,
    ids=[f"{t}-{v[-2:] if v != 'moql' else '02'}{'-qh3' if e == 'qh3' else ''}" for t, v, e in CASES])


@pytest.fixture(autouse=True)
def _relay_engine(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "ENGINE", engine)


def track_info() -> moq.TrackInfo:
    return moq.TrackInfo(priority=1, max_age_us=LONG_US, timescale=1000)


def subscription() -> moq.Subscription:
    return moq.Subscription(priority=1, max_age_us=LONG_US)


async def read_group(group) -> list[bytes]:
    return [frame.payload async for frame in group]


async def open_track(c, broadcast: str, track: str, timeout: float = 10.0):
    consumer = await asyncio.wait_for(c.announced_broadcast(broadcast), timeout)
    return await consumer.subscribe_track(track, subscription())


def relay_path(transport: str, version: str, name: str) -> str:
    """Where the relay files a broadcast: lite-03/04 over raw QUIC carry no path, so root "/"."""
    return name if transport == "moql" and vnum(version) in (3, 4) else f"anon/{name}"


def upstreams(relay, path: str) -> int:
    b = relay.handle.origin.best(path)
    return -1 if b is None else b.upstream_count()


async def test_publish_subscribe_bytes_and_order(tmp_path, transport, version) -> None:
    groups, frames = 5, 4
    done = Flag()
    received = [Flag() for _ in range(groups)]
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("clock")
                t = b.publish_track("seconds", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)  # used() fires at TRACK; let the SUBSCRIBE follow
                for g in range(groups):
                    group = t.append_group()
                    for f in range(frames):
                        group.write_frame(f"g{g}f{f}".encode(), (g * frames + f) * 1000)
                    group.finish()
                    if vnum(version) <= 2:
                        # lite-01/02 carry no max latency (read as 0: the newest group only), so
                        # under load a group the next one catches up with is skipped: lockstep.
                        await received[g].wait(30)
                    else:
                        # Live pacing: each group rides its own stream, and a group overtaken by a
                        # newer one may be skipped by the client's in-order reader.
                        await asyncio.sleep(0.02)
                await done.wait()

        async def subscriber() -> list[tuple[int, list[bytes], list[int]]]:
            async with client(url) as c:
                tc = await open_track(c, "clock", "seconds")
                out = []
                for g in range(groups):
                    group = await asyncio.wait_for(tc.next_group(), 10)
                    got = [f async for f in group]
                    out.append((group.sequence, [f.payload for f in got], [f.timestamp_us for f in got]))
                    received[g].set()
                done.set()
                return out

        result: list = []
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(subscriber))
                n.start_soon(sub)
    assert [seq for seq, _, _ in result] == list(range(groups))
    for g, (_, payloads, stamps) in enumerate(result):
        assert payloads == [f"g{g}f{f}".encode() for f in range(frames)]
        if vnum(version) >= 5:  # timestamps exist on the wire from lite-05
            assert stamps == [(g * frames + f) * 1000 for f in range(frames)]


async def test_twenty_subscribers_share_one_upstream(tmp_path, transport, version) -> None:
    subscribers, groups = 20, 3
    ready = Flag()
    done = Flag()
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("fan")
                t = b.publish_track("v", track_info())
                b.announce()
                await ready.wait(30)
                # Until every subscriber has its groups: lite-01/02 read as max latency 0, so a
                # loaded relay may skip a group another one caught up with.
                g = 0
                while not done.event.is_set() and g < 400:
                    group = t.append_group()
                    group.write_frame(b"payload-%d" % g)
                    group.finish()
                    g += 1
                    await asyncio.sleep(0.05)

        async def many() -> list[list[bytes]]:
            opened = 0

            async def one() -> list[bytes]:
                nonlocal opened
                async with client(url) as c:
                    tc = await open_track(c, "fan", "v", 20)
                    first = asyncio.ensure_future(tc.next_group())
                    await asyncio.sleep(0.3)
                    opened += 1
                    if opened == subscribers:
                        ready.set()
                    got = [b"".join(await read_group(await asyncio.wait_for(first, 20)))]
                    while len(got) < groups:
                        got.append(b"".join(await read_group(await asyncio.wait_for(tc.next_group(), 20))))
                    return got

            out = await asyncio.gather(*(one() for _ in range(subscribers)))
            done.set()
            return out

        result: list = []
        peak = 0
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(many))
                n.start_soon(sub)
                while not result:
                    peak = max(peak, upstreams(relay, relay_path(transport, version, "fan")))
                    await trio.sleep(0.05)
        broadcast_total = relay.handle.origin.best(relay_path(transport, version, "fan"))
    assert len(result) == subscribers
    for got in result:
        numbers = [int(p.split(b"-")[1]) for p in got]
        if vnum(version) >= 3:  # everyone subscribed before group 0, with a 30 s window
            assert numbers == list(range(groups)), got
        else:  # max latency 0: increasing, with a skipped group allowed under load
            assert numbers == sorted(set(numbers)) and got == [b"payload-%d" % n for n in numbers], got
    assert peak == 1, "every subscriber must share one upstream subscription"
    assert broadcast_total is None or broadcast_total.upstream_subscriptions_total == 1


async def test_late_joiner_starts_at_latest_group(tmp_path, transport, version) -> None:
    published = Flag()
    done = Flag()
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("late")
                t = b.publish_track("v", track_info())
                b.announce()
                # An early subscriber makes the relay pull the track; then it leaves.
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)  # used() fires at TRACK; let the SUBSCRIBE follow
                for g in range(5):
                    group = t.append_group()
                    group.write_frame(b"old-%d" % g)
                    if g < 4:
                        group.finish()
                published.set()
                await done.wait(30)
                group.write_frame(b"more")
                group.finish()
                await asyncio.sleep(0.5)

        async def early() -> None:
            async with client(url) as c:
                tc = await open_track(c, "late", "v")
                await asyncio.wait_for(tc.next_group(), 10)
                await published.wait()
                await asyncio.sleep(0.3)
                # The early subscriber stays, so the relay keeps the track cached.
                await done.wait(30)

        async def late() -> tuple[list[int], list[bytes]]:
            await published.wait()
            await asyncio.sleep(0.5)
            async with client(url) as c:
                tc = await open_track(c, "late", "v")
                seen = []
                while True:
                    group = await asyncio.wait_for(tc.next_group(), 5)
                    seen.append(group.sequence)
                    if group.sequence == 4:
                        done.set()
                        return seen, await asyncio.wait_for(read_group(group), 10)

        result: list = []
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)
                n.start_soon(in_thread, early)

                async def run_late() -> None:
                    result.append(await in_thread(late))
                n.start_soon(run_late)
    seen, payloads = result[0]
    if vnum(version) >= 6:
        # lite-06: start 0 is a lower bound, so every cached group still fresh comes first.
        assert seen == [0, 1, 2, 3, 4]
    else:
        assert seen == [4]  # lite-03..05: a subscription without a start begins at the latest
    assert payloads == [b"old-4", b"more"]


async def test_announce_discovery_and_end(tmp_path, transport, version) -> None:
    leave = Flag()
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("room/cam")
                b.publish_track("v", track_info())
                b.announce()
                await leave.wait(30)
            await asyncio.sleep(0.2)

        async def watcher() -> list[tuple[str, bool]]:
            seen: list[tuple[str, bool]] = []
            async with client(url) as c:
                announced = c.announced("room")

                async def watch() -> None:
                    async for update in announced:
                        seen.append((update.prefix, update.active))
                        if update.active:
                            leave.set()
                        else:
                            return

                await asyncio.wait_for(watch(), 20)
            return seen

        result: list = []
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def w() -> None:
                    result.extend(await in_thread(watcher))
                n.start_soon(w)
    assert [active for _, active in result] == [True, False]
    assert all(path.endswith("room/cam") for path, _ in result)


PUBLISHER_SCRIPT = """
import asyncio, sys, moq
async def main():
    url = sys.argv[1]
    async with moq.Client(url, tls_verify=False, websocket_enabled=url.startswith("ws"), reconnect=False) as c:
        b = c.create_broadcast("doomed")
        t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        b.announce()
        n = 0
        while True:
            g = t.append_group()
            g.write_frame(b"tick-%d" % n)
            g.finish()
            n += 1
            print("group", n, flush=True)
            await asyncio.sleep(0.1)
asyncio.run(main())
"""


async def test_publisher_killed_ends_subscribers(tmp_path, transport, version) -> None:
    killed = Flag()
    async with running_relay(tmp_path, version, idle="3s") as relay:
        url = relay.url(transport, "anon")
        proc = spawn_python(PUBLISHER_SCRIPT, url)

        async def subscriber() -> tuple[int, float]:
            async with client(url) as c:
                tc = await open_track(c, "doomed", "v", 20)
                received = 0
                while not killed.event.is_set():
                    group = await asyncio.wait_for(tc.next_group(), 10)
                    assert group is not None
                    received += 1
                    if received == 3:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.set()
                start = time.monotonic()
                try:
                    while await asyncio.wait_for(tc.next_group(), 20) is not None:
                        pass
                except moq.Error:
                    pass  # the relay may end the track with an error instead of a clean end
                return received, time.monotonic() - start

        try:
            with trio.fail_after(45):
                received, took = await in_thread(subscriber)
        finally:
            proc.kill()
            proc.wait()
        await wait_until(lambda: relay.handle.origin.best(relay_path(transport, version, "doomed")) is None, 10)
    assert received >= 3
    # The relay notices the dead publisher within its idle timeout (3 s here) and ends the track.
    assert took < 3 + 5, took


async def test_one_mebibyte_frames(tmp_path, transport, version) -> None:
    payloads = [os.urandom(1 << 20) for _ in range(3)]
    done = Flag()
    received = [Flag() for _ in payloads]
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("big")
                t = b.publish_track("v", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)  # used() fires at TRACK; let the SUBSCRIBE follow
                for k, p in enumerate(payloads):
                    group = t.append_group()
                    group.write_frame(p)
                    group.finish()
                    # In lockstep with the reader: lite-01/02 carry no max latency, so (as with the
                    # Rust relay) the subscription wants only the newest group, and a group still
                    # in flight when the next one starts is dropped.
                    await received[k].wait(60)
                await done.wait(60)

        async def subscriber() -> list[str]:
            async with client(url) as c:
                tc = await open_track(c, "big", "v")
                out = []
                for k in range(len(payloads)):
                    group = await asyncio.wait_for(tc.next_group(), 20)
                    out.append(hashlib.sha256(b"".join(await read_group(group))).hexdigest())
                    received[k].set()
                done.set()
                return out

        result: list = []
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(subscriber))
                n.start_soon(sub)
    assert result == [hashlib.sha256(p).hexdigest() for p in payloads]


async def test_ten_thousand_small_frames(tmp_path, transport, version) -> None:
    groups, per_group = 10, 1000
    done = Flag()
    received = [Flag() for _ in range(groups)]
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("small")
                t = b.publish_track("v", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)  # used() fires at TRACK; let the SUBSCRIBE follow
                for g in range(groups):
                    group = t.append_group()
                    for f in range(per_group):
                        group.write_frame(b"%d:%d" % (g, f))
                    group.finish()
                    await received[g].wait(30)  # lockstep, as in the 1 MiB test (lite-01/02)
                await done.wait(60)

        async def subscriber() -> list[list[bytes]]:
            async with client(url) as c:
                tc = await open_track(c, "small", "v")
                out = []
                for g in range(groups):
                    group = await asyncio.wait_for(tc.next_group(), 20)
                    out.append(await asyncio.wait_for(read_group(group), 20))
                    received[g].set()
                done.set()
                return out

        result: list = []
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(subscriber))
                n.start_soon(sub)
    assert sum(len(g) for g in result) == groups * per_group
    for g, frames in enumerate(result):
        assert frames == [b"%d:%d" % (g, f) for f in range(per_group)]


async def test_unsubscribe_then_resubscribe(tmp_path, transport, version) -> None:
    stop = Flag()
    unsubscribed = Flag()
    checked = Flag()
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("re")
                t = b.publish_track("v", track_info())
                b.announce()
                n = 0
                while not stop.event.is_set():
                    group = t.append_group()
                    group.write_frame(b"n%d" % n)
                    group.finish()
                    n += 1
                    await asyncio.sleep(0.05)

        async def subscriber() -> tuple[int, int]:
            async with client(url) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("re"), 10)
                tc = await consumer.subscribe_track("v", subscription())
                first = (await asyncio.wait_for(tc.next_group(), 10)).sequence
                tc.cancel()
                unsubscribed.set()
                await checked.wait(20)
                await asyncio.sleep(0.3)  # the publisher moves on meanwhile
                consumer2 = await asyncio.wait_for(c.request_broadcast("re"), 10)
                tc2 = await consumer2.subscribe_track("v", subscription())
                # The client may first replay groups it still holds; fresh ones must follow.
                latest = first
                for _ in range(100):
                    group = await asyncio.wait_for(tc2.next_group(), 10)
                    latest = max(latest, group.sequence)
                    if latest > first + 3:
                        break
                stop.set()
                return first, latest

        result: list = []
        with trio.fail_after(45):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.append(await in_thread(subscriber))
                n.start_soon(sub)

                async def check() -> None:
                    await trio.to_thread.run_sync(unsubscribed.event.wait, 20)
                    # The relay drops its upstream subscription once the last subscriber leaves.
                    await wait_until(lambda: upstreams(relay, relay_path(transport, version, "re")) == 0, 10)
                    checked.set()
                n.start_soon(check)
    first, latest = result[0]
    assert latest > first + 3, "groups published after the resubscribe must arrive"


async def test_missing_broadcast(tmp_path, transport, version) -> None:
    async with running_relay(tmp_path, version) as relay:
        url = relay.url(transport, "anon")

        async def subscriber() -> str:
            async with client(url) as c:
                try:
                    consumer = await asyncio.wait_for(c.request_broadcast("nope"), 5)
                    tc = await consumer.subscribe_track("v", subscription())
                    group = await asyncio.wait_for(tc.next_group(), 5)
                except moq.Error as exc:
                    return f"error {type(exc).__name__}: {exc}"
                except TimeoutError:
                    return "no answer"
                return "ended" if group is None else "got a group"

        with trio.fail_after(30):
            outcome = await in_thread(subscriber)
        # The relay answered that subscription alone and is still fine afterwards.
        assert relay.handle.origin.best(relay_path(transport, version, "nope")) is None
    # The client learns at once that there is no such broadcast (the relay resets with NotFound).
    assert outcome.startswith("error") or outcome == "ended", outcome
