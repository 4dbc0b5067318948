"""Live-delivery cases for bench.py (`--live`): what a default subscriber gets, ours vs the baseline.

A default subscriber is moq-rs's `Subscription()`: max latency 0, no start group ("the newest,
no staleness"). Three cases, each with real moq-rs clients, repeated:

* late join: a publisher writes groups 0-4 (50 ms apart), then a subscriber arrives; which group
  does it see first, and is the next one live group 5?
* burst: a subscriber is reading, the publisher writes 200 one-frame groups as fast as it can;
  how many groups and bytes reach the application, and how many look complete without their
  frame (empty)?
* overlap: 20 three-frame groups, each still open when the next starts (a GOP whose tail is
  written late); how many reach the application whole, and how many look complete but short?
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field

import moq

WINDOW_US = 30_000_000
BURST = 200
OVERLAP = 20


def _client(url: str) -> moq.Client:
    return moq.Client(url, tls_verify=False, reconnect=False, websocket_enabled=url.startswith("ws"))


def _info() -> moq.TrackInfo:
    return moq.TrackInfo(priority=1, max_age_us=WINDOW_US, timescale=1000)


async def _frames(group, timeout: float = 1.5) -> list[bytes] | None:
    """The group's frames if it ends cleanly; None if it was reset (the client then waits)."""

    async def read() -> list[bytes]:
        return [f.payload async for f in group]

    try:
        return await asyncio.wait_for(read(), timeout)
    except (TimeoutError, moq.Error):
        return None


async def late_join(url: str, name: str) -> tuple[int | None, int | None]:
    """(first group seen, second group seen) by a default subscriber arriving after groups 0-4."""
    async with _client(url) as p:
        b = p.create_broadcast(name)
        t = b.publish_track("v", _info())
        b.announce()

        def write(n: int) -> None:
            g = t.append_group()
            g.write_frame(b"g%d" % n, n * 100)
            g.finish()

        for n in range(5):
            write(n)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        async with _client(url) as s:
            consumer = await asyncio.wait_for(s.announced_broadcast(name), 10)
            sub = await consumer.subscribe_track("v", moq.Subscription())
            first = asyncio.ensure_future(sub.recv_group())
            await asyncio.sleep(0.5)
            write(5)
            seen: list[int | None] = []
            try:
                g = await asyncio.wait_for(first, 5)
                seen.append(g.sequence)
                await _frames(g)
                g = await asyncio.wait_for(sub.recv_group(), 5)
                seen.append(g.sequence)
            except (TimeoutError, moq.Error):
                pass
            seen += [None] * (2 - len(seen))
            return seen[0], seen[1]


@dataclass
class Delivery:
    groups: int = 0  # reached the application, whole
    nbytes: int = 0
    short: int = 0  # ended cleanly with fewer frames than written (0 frames = empty)
    newest: bool = False  # the last group written arrived, whole


async def burst(url: str, name: str) -> Delivery:
    out = Delivery()
    async with _client(url) as p, _client(url) as s:
        b = p.create_broadcast(name)
        t = b.publish_track("v", _info())
        b.announce()
        consumer = await asyncio.wait_for(s.announced_broadcast(name), 10)
        sub = await consumer.subscribe_track("v", moq.Subscription())
        warm = t.append_group()
        warm.write_frame(b"warm")
        warm.finish()
        await _frames(await asyncio.wait_for(sub.recv_group(), 10))
        await asyncio.sleep(0.3)
        for i in range(1, BURST + 1):
            g = t.append_group()
            g.write_frame(b"x%d" % i)
            g.finish()
        try:
            while True:
                g = await asyncio.wait_for(sub.recv_group(), 2)
                frames = await _frames(g)
                if frames is None:
                    continue
                if frames == [b"x%d" % g.sequence]:
                    out.groups += 1
                    out.nbytes += len(frames[0])
                    out.newest |= g.sequence == BURST
                else:
                    out.short += 1
        except (TimeoutError, moq.Error):
            pass
    return out


async def overlap(url: str, name: str) -> Delivery:
    out = Delivery()
    async with _client(url) as p, _client(url) as s:
        b = p.create_broadcast(name)
        t = b.publish_track("v", _info())
        b.announce()
        consumer = await asyncio.wait_for(s.announced_broadcast(name), 10)
        sub = await consumer.subscribe_track("v", moq.Subscription())

        async def read() -> None:
            while True:
                g = await sub.recv_group()
                frames = await _frames(g)
                if frames is None:
                    continue
                if frames == [b"%d-%d" % (g.sequence, k) for k in range(3)]:
                    out.groups += 1
                    out.nbytes += sum(map(len, frames))
                    out.newest |= g.sequence == OVERLAP - 1
                else:
                    out.short += 1

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.5)
        prev = None
        for n in range(OVERLAP + 1):
            g = t.append_group() if n < OVERLAP else None
            if g is not None:
                g.write_frame(b"%d-0" % n, n * 100)
            if prev is not None:
                prev.write_frame(b"%d-1" % (n - 1), n * 100 - 60)
                prev.write_frame(b"%d-2" % (n - 1), n * 100 - 30)
                prev.finish()
            prev = g
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        reader.cancel()
    return out


@dataclass
class LiveResult:
    relay: str
    transport: str
    late_first: list[int | None] = field(default_factory=list)
    late_second: list[int | None] = field(default_factory=list)
    bursts: list[Delivery] = field(default_factory=list)
    overlaps: list[Delivery] = field(default_factory=list)


async def run_live(relay_name: str, port: int, transport: str, repeat: int) -> LiveResult:
    res = LiveResult(relay_name, transport)
    url = f"{transport}://127.0.0.1:{port}/live"
    for k in range(repeat):
        first, second = await late_join(url, f"lj{k}")
        res.late_first.append(first)
        res.late_second.append(second)
        res.bursts.append(await burst(url, f"burst{k}"))
        res.overlaps.append(await overlap(url, f"gop{k}"))
    return res


def _spread(values: list[int]) -> str:
    return f"{min(values)}-{max(values)} (median {statistics.median(values):g})" if values else "-"


def live_table(results: list[LiveResult]) -> str:
    head = ("| relay | transport | late join: first, next group | burst of 200: groups delivered | "
            "bytes | empty | newest arrived | overlap of 20: whole groups | short but complete |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        joins = sorted({f"{a}, {b}" for a, b in zip(r.late_first, r.late_second, strict=True)})
        lines.append(
            f"| {r.relay} | {r.transport} | {'; '.join(joins)} | {_spread([d.groups for d in r.bursts])} | "
            f"{_spread([d.nbytes for d in r.bursts])} | {sum(d.short for d in r.bursts)} | "
            f"{sum(d.newest for d in r.bursts)}/{len(r.bursts)} | {_spread([d.groups for d in r.overlaps])} | "
            f"{sum(d.short for d in r.overlaps)} |")
    return "\n".join(lines)
