"""Memory soak: 2 Mbit/s to 20 subscribers that keep joining and leaving; the relay's RSS over time.

    .venv/bin/python benchmarks/soak.py --minutes 10 [--engine qh3]

Prints the relay's RSS every 30 s and, at the end, the first/last/peak values and the growth
over the second half of the run (flat means no leak per join/leave cycle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import moq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import start_ours  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def soak(port: int, pid: int, minutes: float, subscribers: int, mbps: float) -> list[tuple[float, float]]:
    url = f"moql://127.0.0.1:{port}/soak"
    stop = asyncio.Event()
    frame = 1200
    fps = int(mbps * 1e6 / 8 / frame)
    samples: list[tuple[float, float]] = []
    cycles = 0

    def make():
        return moq.Client(url, tls_verify=False, websocket_enabled=False, reconnect=False)

    async def publisher() -> None:
        async with make() as c:
            b = c.create_broadcast("s")
            t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=2_000_000, timescale=1000))
            b.announce()
            pad = os.urandom(frame)
            i = 0
            start = time.perf_counter()
            group = None
            while not stop.is_set():
                if i % fps == 0:
                    if group is not None:
                        group.finish()
                    group = t.append_group()
                group.write_frame(pad)
                i += 1
                delay = start + i / fps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def viewer() -> None:
        nonlocal cycles
        await asyncio.sleep(random.uniform(0, 5))
        while not stop.is_set():
            try:
                async with make() as c:
                    consumer = await asyncio.wait_for(c.announced_broadcast("s"), 10)
                    track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=2_000_000))
                    until = time.monotonic() + random.uniform(5, 20)  # watch a while, then leave
                    while time.monotonic() < until and not stop.is_set():
                        group = await asyncio.wait_for(track.next_group(), 10)
                        if group is None:
                            break
                        async for _ in group:
                            pass
            except (TimeoutError, moq.Error):
                pass
            cycles += 1

    async def sampler() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            value = rss_mib(pid)
            samples.append((time.monotonic() - t0, value))
            print(f"t={samples[-1][0]:6.0f}s relay RSS {value:6.1f} MiB  join/leave cycles {cycles}", flush=True)
            await asyncio.sleep(30)

    async def timer() -> None:
        await asyncio.sleep(minutes * 60)
        stop.set()

    await asyncio.gather(publisher(), sampler(), timer(), *(viewer() for _ in range(subscribers)))
    samples.append((minutes * 60, rss_mib(pid)))
    print(f"join/leave cycles: {cycles}")
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--subscribers", type=int, default=20)
    ap.add_argument("--mbps", type=float, default=2.0)
    ap.add_argument("--engine", default="aioquic")
    args = ap.parse_args()
    relay = start_ours(args.engine, Path(tempfile.mkdtemp()))
    try:
        samples = asyncio.run(soak(relay.port, relay.proc.pid, args.minutes, args.subscribers, args.mbps))
    finally:
        relay.stop()
    values = [v for _, v in samples]
    half = [v for t, v in samples if t >= args.minutes * 30]
    print(f"RSS first {values[0]:.1f} MiB, last {values[-1]:.1f} MiB, peak {max(values):.1f} MiB; "
          f"second half min {min(half):.1f} max {max(half):.1f} MiB (growth {max(half) - min(half):.1f} MiB)")


if __name__ == "__main__":
    main()
