"""The real Rust client (moq-rs 0.5.1) speaking IETF moq-transport drafts 14 to 22 through our
relay.

moq-rs offers every moq-lite and IETF version and takes what the relay picks: a relay limited to
`moq-transport-14` makes it speak draft-14 on raw QUIC (ALPN `moq-00`), WebTransport
(`wt-protocol: moq-00`) and WebSocket (subprotocol `qmux-01.moq-00`); limited to `moqt-15` or
`moqt-16` ... `moqt-22`, the same with `moqt-NN` (`qmux-01.moqt-22` ...). Drafts 17-22 are the
new wire (leading-ones varints, SETUP on uni streams, a stream per request). The single-protocol cases
run for each draft on each of the three transports; cross-protocol cases put moq-lite clients
beside IETF clients of several drafts on one relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import moq
import pytest
import trio
from harness import (
    Flag,
    client,
    in_thread,
    publish_until,
    read_groups,
    running_relay,
    spawn_python,
    wait_until,
)

IETF = "moq-transport-14"
# Every draft the relay claims, by its `[server] version` name (moq-rs offers moq-00 and moqt-15
# to moqt-22 and takes what a relay limited to one of them picks).
DRAFTS = ["moq-transport-14", "moqt-15", "moqt-16", "moqt-17", "moqt-18", "moqt-19", "moqt-20", "moqt-21", "moqt-22"]
per_draft = pytest.mark.parametrize("draft", DRAFTS, ids=[f"d{n}" for n in range(14, 23)])
LONG_US = 30_000_000
TRANSPORT_OF = {"moql": "quic", "https": "webtransport", "ws": "websocket"}
# Every single-protocol case, on each transport (the URL scheme the Rust client is given).
per_transport = pytest.mark.parametrize("scheme", list(TRANSPORT_OF), ids=list(TRANSPORT_OF.values()))
# The four slowest cases (large and many frames, a killed publisher, a late join) run drafts 14-16
# on every transport and drafts 17-22 on one transport each, in turn (each transport twice), to
# keep the suite inside CI's time; every other case runs every draft on every transport.
_SCHEMES = list(TRANSPORT_OF)
_HEAVY = [(scheme, draft) for draft in DRAFTS[:3] for scheme in _SCHEMES] + \
    [(_SCHEMES[i % 3], draft) for i, draft in enumerate(DRAFTS[3:])]
per_draft_heavy = pytest.mark.parametrize(("scheme", "draft"), _HEAVY,
                                          ids=[f"{TRANSPORT_OF[sc]}-d{DRAFTS.index(d) + 14}" for sc, d in _HEAVY])


def track_info() -> moq.TrackInfo:
    return moq.TrackInfo(priority=1, max_age_us=LONG_US, timescale=1000)


def subscription() -> moq.Subscription:
    return moq.Subscription(priority=1, max_age_us=LONG_US)


async def read_group(group) -> list[bytes]:
    return [frame.payload async for frame in group]


async def open_track(c, broadcast: str, track: str, timeout: float = 10.0):
    consumer = await asyncio.wait_for(c.announced_broadcast(broadcast), timeout)
    return await consumer.subscribe_track(track, subscription())


def upstreams(relay, path: str) -> int:
    b = relay.handle.origin.best(path)
    return -1 if b is None else b.upstream_count()


def ietf_sessions(relay) -> list[tuple[str, str]]:
    return [(s.transport.info.transport, s.version.name_str) for s in relay.handle.sessions]


async def run_jobs(timeout: float, *jobs) -> list:
    """Run asyncio jobs in threads concurrently; their results in order."""
    results: list = [None] * len(jobs)
    with trio.fail_after(timeout):
        async with trio.open_nursery() as n:
            for i, job in enumerate(jobs):
                async def one(i=i, job=job) -> None:
                    results[i] = await in_thread(job)
                n.start_soon(one)
    return results


@per_draft
@per_transport
async def test_publish_subscribe_bytes_and_order(tmp_path, scheme: str, draft: str) -> None:
    groups, frames = 5, 4
    done = Flag()
    seen: set[str] = set()
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("clock")
                t = b.publish_track("seconds", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)
                for g in range(groups):
                    group = t.append_group()
                    for f in range(frames):
                        group.write_frame(f"g{g}f{f}".encode(), (g * frames + f) * 1000)
                    group.finish()
                    await asyncio.sleep(0.02)
                await done.wait()

        async def subscriber() -> list[tuple[int, list[bytes]]]:
            async with client(url) as c:
                tc = await open_track(c, "clock", "seconds")
                seen.update(ietf_sessions(relay))
                out = []
                for _ in range(groups):
                    group = await asyncio.wait_for(tc.next_group(), 10)
                    out.append((group.sequence, await read_group(group)))
                done.set()
                return out

        _, result = await run_jobs(40, publisher, subscriber)
    assert seen == {(TRANSPORT_OF[scheme], draft)}
    assert [seq for seq, _ in result] == list(range(groups))
    for g, (_, payloads) in enumerate(result):
        assert payloads == [f"g{g}f{f}".encode() for f in range(frames)]


@per_draft
@per_transport
async def test_twenty_subscribers_share_one_upstream(tmp_path, scheme: str, draft: str) -> None:
    subscribers, groups = 20, 3
    ready = Flag()
    done = Flag()
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("fan")
                t = b.publish_track("v", track_info())
                b.announce()
                await ready.wait(30)
                g = 0
                while not done.event.is_set() and g < 400:
                    group = t.append_group()
                    group.write_frame(b"payload-%d" % g)
                    group.finish()
                    g += 1
                    await asyncio.sleep(0.05)

        async def many() -> list[list[int]]:
            opened = 0

            async def one() -> list[int]:
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
                    return [int(p.split(b"-")[1]) for p in got]

            out = await asyncio.gather(*(one() for _ in range(subscribers)))
            done.set()
            return out

        peak = 0
        result: list = []
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)

                async def sub() -> None:
                    result.extend(await in_thread(many))
                n.start_soon(sub)
                while not result:
                    peak = max(peak, upstreams(relay, "anon/fan"))
                    await trio.sleep(0.05)
        broadcast = relay.handle.origin.best("anon/fan")
    assert len(result) == subscribers
    for numbers in result:
        assert numbers == list(range(groups)), numbers  # all subscribed before group 0
    assert peak == 1, "every subscriber must share one upstream subscription"
    assert broadcast is None or broadcast.upstream_subscriptions_total == 1


@per_draft_heavy
async def test_late_joiner_starts_at_latest_group(tmp_path, scheme: str, draft: str) -> None:
    published = Flag()
    done = Flag()
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("late")
                t = b.publish_track("v", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)
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
                await done.wait(30)  # stays, so the relay keeps the track cached

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

        _, _, (seen, payloads) = await run_jobs(40, publisher, early, late)
    # LargestObject: the latest group, from its first object, then what follows.
    assert seen == [4]
    assert payloads == [b"old-4", b"more"]


@per_draft
@per_transport
async def test_announce_discovery_and_end(tmp_path, scheme: str, draft: str) -> None:
    leave = Flag()
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

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

        _, result = await run_jobs(40, publisher, watcher)
        await wait_until(lambda: relay.handle.origin.best("anon/room/cam") is None, 5)
    assert [active for _, active in result] == [True, False]
    assert all(path.endswith("room/cam") for path, _ in result)


@per_draft
@per_transport
async def test_unsubscribe_then_resubscribe(tmp_path, scheme: str, draft: str) -> None:
    stop = Flag()
    unsubscribed = Flag()
    checked = Flag()
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

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
                await asyncio.sleep(0.3)
                consumer2 = await asyncio.wait_for(c.request_broadcast("re"), 10)
                tc2 = await consumer2.subscribe_track("v", subscription())
                latest = first
                for _ in range(100):
                    group = await asyncio.wait_for(tc2.next_group(), 10)
                    latest = max(latest, group.sequence)
                    if latest > first + 3:
                        break
                stop.set()
                return first, latest

        async def check() -> None:
            await trio.to_thread.run_sync(unsubscribed.event.wait, 20)
            # UNSUBSCRIBE from the last subscriber ends the upstream SUBSCRIBE too.
            await wait_until(lambda: upstreams(relay, "anon/re") == 0, 10)
            checked.set()

        result: list = []
        with trio.fail_after(45):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)
                n.start_soon(check)

                async def sub() -> None:
                    result.append(await in_thread(subscriber))
                n.start_soon(sub)
    first, latest = result[0]
    assert latest > first + 3, "groups published after the resubscribe must arrive"


@per_draft
@per_transport
async def test_missing_broadcast(tmp_path, scheme: str, draft: str) -> None:
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

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

        (outcome,) = await run_jobs(30, subscriber)
        assert relay.handle.origin.best("anon/nope") is None
    assert outcome.startswith("error") or outcome == "ended", outcome


# A publisher in its own process, so it can die without a goodbye (SIGKILL: no CONNECTION_CLOSE).
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
            await asyncio.sleep(0.1)
asyncio.run(main())
"""
IDLE = 2  # the relay's QUIC idle timeout in the SIGKILL case, seconds (keep-alive is 1 s)


@per_draft_heavy
async def test_publisher_killed_ends_subscribers(tmp_path, scheme: str, draft: str) -> None:
    killed = Flag()
    async with running_relay(tmp_path, draft, idle=f"{IDLE}s") as relay:
        url = relay.url(scheme, "anon")
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
                    while await asyncio.wait_for(tc.next_group(), 15) is not None:
                        pass
                except moq.Error:
                    pass  # PUBLISH_DONE with an error code surfaces as one
                return received, time.monotonic() - start

        try:
            with trio.fail_after(40):
                received, took = await in_thread(subscriber)
        finally:
            proc.kill()
            proc.wait()
        await wait_until(lambda: relay.handle.origin.best("anon/doomed") is None, 10)
        # The relay is still up: a new publisher of the same name reaches a new subscriber.
        stop = Flag()
        again: list = []
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, lambda: publish_until(url, "doomed", stop))

                async def sub() -> None:
                    try:
                        again.extend(await in_thread(lambda: read_groups(url, "doomed", 1, timeout=10)))
                    finally:
                        stop.set()
                n.start_soon(sub)
    assert received >= 3
    # The relay notices the dead publisher within its idle timeout and ends the track.
    assert took < IDLE + 5, took
    assert len(again) == 1 and again[0].startswith(b"doomed-"), again


@per_draft_heavy
async def test_one_mebibyte_frames(tmp_path, scheme: str, draft: str) -> None:
    payloads = [os.urandom(1 << 20) for _ in range(3)]
    done = Flag()
    received = [Flag() for _ in payloads]
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("big")
                t = b.publish_track("v", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)
                for k, p in enumerate(payloads):
                    group = t.append_group()
                    group.write_frame(p)
                    group.finish()
                    await received[k].wait(30)  # in lockstep with the reader, as in the lite matrix
                await done.wait(30)

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

        _, result = await run_jobs(60, publisher, subscriber)
    assert result == [hashlib.sha256(p).hexdigest() for p in payloads]


@per_draft_heavy
async def test_ten_thousand_small_frames(tmp_path, scheme: str, draft: str) -> None:
    groups, per_group = 10, 1000
    done = Flag()
    received = [Flag() for _ in range(groups)]
    async with running_relay(tmp_path, draft) as relay:
        url = relay.url(scheme, "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("small")
                t = b.publish_track("v", track_info())
                b.announce()
                await asyncio.wait_for(t.used(), 15)
                await asyncio.sleep(0.5)
                for g in range(groups):
                    group = t.append_group()
                    for f in range(per_group):
                        group.write_frame(b"%d:%d" % (g, f))
                    group.finish()
                    await received[g].wait(30)
                await done.wait(30)

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

        _, result = await run_jobs(60, publisher, subscriber)
    assert sum(len(g) for g in result) == groups * per_group
    for g, frames in enumerate(result):
        assert frames == [b"%d:%d" % (g, f) for f in range(per_group)], g


async def cross(tmp_path, pub: str, subs: list[str], versions: dict[str, list[str]]) -> tuple[list, set]:
    """A publisher on `pub` to subscribers on `subs` (schemes); frames of 3 groups each, and the
    (transport, version) of every session seen."""
    groups = 3
    ready = Flag()
    done = Flag()
    seen: set[tuple[str, str]] = set()
    async with running_relay(tmp_path, None, transport_versions=versions) as relay:

        async def publisher() -> None:
            async with client(relay.url(pub, "anon")) as c:
                b = c.create_broadcast("x")
                t = b.publish_track("v", track_info())
                b.announce()
                await ready.wait(20)
                await asyncio.sleep(0.5)
                for g in range(groups):
                    group = t.append_group()
                    group.write_frame(b"%d-a" % g)
                    group.write_frame(b"%d-b" % g)
                    group.finish()
                    await asyncio.sleep(0.2)
                await done.wait(30)

        async def subscribers() -> list[list[bytes]]:
            started = 0

            async def one(scheme: str) -> list[bytes]:
                nonlocal started
                async with client(relay.url(scheme, "anon")) as c:
                    track = await open_track(c, "x", "v")
                    first = asyncio.ensure_future(track.next_group())
                    await asyncio.sleep(0.3)
                    started += 1
                    if started == len(subs):
                        ready.set()
                    out = [b"|".join(await read_group(await asyncio.wait_for(first, 20)))]
                    while len(out) < groups:
                        out.append(b"|".join(await read_group(await asyncio.wait_for(track.next_group(), 20))))
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
                        seen.add((s.transport.info.transport, s.version.name_str))
                    await trio.sleep(0.05)
    for got in result:
        assert got == [b"%d-a|%d-b" % (g, g) for g in range(groups)]
    return result, seen


async def test_draft14_over_webtransport(tmp_path) -> None:
    # wt-protocol moq-00: the path comes from the CONNECT URL (CLIENT_SETUP carries none).
    _, seen = await cross(tmp_path, "https", ["https", "moql"], {"webtransport": [IETF], "quic": ["moq-lite-06"]})
    assert seen == {("webtransport", IETF), ("quic", "moq-lite-06")}


async def test_lite_publisher_to_ietf_subscriber(tmp_path) -> None:
    # moq-lite-06 over WebTransport publishes; draft-14 over raw QUIC subscribes.
    _, seen = await cross(tmp_path, "https", ["moql"], {"quic": [IETF], "webtransport": ["moq-lite-06"]})
    assert seen == {("webtransport", "moq-lite-06"), ("quic", IETF)}


async def test_ietf_publisher_to_lite_subscribers(tmp_path) -> None:
    # draft-14 over raw QUIC publishes; moq-lite-06 (WebTransport) and lite-05 (WebSocket) subscribe.
    _, seen = await cross(tmp_path, "moql", ["https", "ws", "moql"],
                          {"quic": [IETF], "webtransport": ["moq-lite-06"], "websocket": ["moq-lite-05"]})
    assert seen == {("quic", IETF), ("webtransport", "moq-lite-06"), ("websocket", "moq-lite-05")}


async def test_ietf_websocket_publisher_to_lite_and_ietf_subscribers(tmp_path) -> None:
    # draft-14 over WebSocket (qmux-01.moq-00) publishes; lite-06 (raw QUIC) and draft-14
    # (WebTransport) subscribe.
    _, seen = await cross(tmp_path, "ws", ["moql", "https"],
                          {"websocket": [IETF], "quic": ["moq-lite-06"], "webtransport": [IETF]})
    assert seen == {("websocket", IETF), ("quic", "moq-lite-06"), ("webtransport", IETF)}


async def test_draft16_publisher_to_lite_and_draft14_subscribers(tmp_path) -> None:
    # draft-16 over raw QUIC (ALPN moqt-16) publishes; lite-06 (WebTransport) and draft-14
    # (WebSocket, qmux-01.moq-00) subscribe: one model under three wires.
    _, seen = await cross(tmp_path, "moql", ["https", "ws"],
                          {"quic": ["moqt-16"], "webtransport": ["moq-lite-06"], "websocket": [IETF]})
    assert seen == {("quic", "moqt-16"), ("webtransport", "moq-lite-06"), ("websocket", IETF)}


async def test_draft15_publisher_to_draft16_and_lite_subscribers(tmp_path) -> None:
    # draft-15 over WebTransport publishes; draft-16 (raw QUIC) and lite-05 (WebSocket) subscribe.
    _, seen = await cross(tmp_path, "https", ["moql", "ws"],
                          {"webtransport": ["moqt-15"], "quic": ["moqt-16"], "websocket": ["moq-lite-05"]})
    assert seen == {("webtransport", "moqt-15"), ("quic", "moqt-16"), ("websocket", "moq-lite-05")}


async def test_draft22_publisher_to_draft14_and_lite06_subscribers(tmp_path) -> None:
    # draft-22 over raw QUIC publishes; draft-14 (WebTransport, moq-00) and lite-06 (WebSocket)
    # subscribe: the newest and the oldest IETF wire and moq-lite through one upstream.
    _, seen = await cross(tmp_path, "moql", ["https", "ws"],
                          {"quic": ["moqt-22"], "webtransport": [IETF], "websocket": ["moq-lite-06"]})
    assert seen == {("quic", "moqt-22"), ("webtransport", IETF), ("websocket", "moq-lite-06")}


async def test_draft14_and_lite06_publishers_to_draft22_subscribers(tmp_path) -> None:
    # The reverse: draft-14 over WebSocket publishes to draft-22 (raw QUIC) and lite-06
    # (WebTransport); then lite-06 publishes to draft-22 on both raw QUIC and WebSocket.
    _, seen = await cross(tmp_path, "ws", ["moql", "https"],
                          {"websocket": [IETF], "quic": ["moqt-22"], "webtransport": ["moq-lite-06"]})
    assert seen == {("websocket", IETF), ("quic", "moqt-22"), ("webtransport", "moq-lite-06")}
    _, seen = await cross(tmp_path, "https", ["moql", "ws"],
                          {"webtransport": ["moq-lite-06"], "quic": ["moqt-22"], "websocket": ["moqt-22"]})
    assert seen == {("webtransport", "moq-lite-06"), ("quic", "moqt-22"), ("websocket", "moqt-22")}


async def test_draft17_publisher_to_draft19_draft20_subscribers(tmp_path) -> None:
    # Inside the new family: draft-17 (its own SUBSCRIBE_NAMESPACE, the Required Request ID
    # Delta) publishes over WebTransport; draft-19 (raw QUIC) and draft-20 (WebSocket, the
    # varint LOCATION_FILTER) subscribe.
    _, seen = await cross(tmp_path, "https", ["moql", "ws"],
                          {"webtransport": ["moqt-17"], "quic": ["moqt-19"], "websocket": ["moqt-20"]})
    assert seen == {("webtransport", "moqt-17"), ("quic", "moqt-19"), ("websocket", "moqt-20")}


@per_draft
async def test_ietf_publisher_to_legacy_subscribers(tmp_path, draft: str) -> None:
    # The draft over raw QUIC publishes; lite-02 (the legacy in-band SETUP, "moql") subscribes over
    # WebTransport and over WebSocket.
    _, seen = await cross(tmp_path, "moql", ["https", "ws"],
                          {"quic": [draft], "webtransport": ["moql"], "websocket": ["moql"]})
    assert seen == {("quic", draft), ("webtransport", "moq-lite-02"), ("websocket", "moq-lite-02")}


@per_draft
async def test_legacy_publisher_to_ietf_subscribers(tmp_path, draft: str) -> None:
    # lite-02 over WebTransport publishes; the draft subscribes over raw QUIC and over WebSocket.
    _, seen = await cross(tmp_path, "https", ["moql", "ws"],
                          {"webtransport": ["moql"], "quic": [draft], "websocket": [draft]})
    assert seen == {("webtransport", "moq-lite-02"), ("quic", draft), ("websocket", draft)}
