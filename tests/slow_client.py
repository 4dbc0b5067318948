"""A moq-rs client at a steady bit rate, as a process inside a host's namespace
(tests/test_slow_subscriber.py).

    python slow_client.py pub <url> <name> <period_s> <frames> <frame_bytes>
    python slow_client.py sub <url> <name> <max_age_us>

Both print one line per event to stdout, `<CLOCK_MONOTONIC seconds> <event> [detail]`:

- pub: a group every `period` seconds, of `frames` frames of `frame_bytes` each, spread evenly
  over the period as a camera's would be. Each frame starts with its group number, its index,
  the group's frame count and its publish time (CLOCK_REALTIME, which every namespace shares).
  Prints `first <n>` once, then `group <n>` as each group is finished. SIGTERM ends the track.
- sub: subscribes with the given max latency (moq-lite's max_age_us; 0 = only the newest group)
  and reads every group as it arrives, each in a task of its own, and prints per group
  `group <n> <frames> <complete 0|1> <first frame latency s> <last frame latency s> <outcome>`
  where outcome is `ok`, `short` (ended cleanly with frames missing) or `reset:<error>`.
  On SIGTERM the groups still being read are printed with outcome `pending`, then `closed`.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import sys
import time

import moq

HEADER = struct.Struct("!QIId")  # group, frame index, frames in the group, publish time


def emit(*parts: object) -> None:
    print(f"{time.monotonic():.3f}", *parts, flush=True)


def client(url: str) -> moq.Client:
    return moq.Client(url, tls_verify=False, reconnect=False)


async def publish(url: str, name: str, period: float, frames: int, size: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pad = bytes(size - HEADER.size)
    spacing = period / frames
    async with client(url) as c:
        broadcast = c.create_broadcast(name)
        track = broadcast.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        broadcast.announce()
        await asyncio.sleep(1.0)  # let the subscribers hear of the announcement first
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            group = track.append_group()
            if n == 0:
                emit("first", group.sequence)
            for i in range(frames):
                at = start + n * period + i * spacing
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                stamp = int((at - start) * 1_000_000)
                group.write_frame(HEADER.pack(group.sequence, i, frames, time.time()) + pad, stamp)
            group.finish()
            emit("group", group.sequence)
            n += 1
            await asyncio.sleep(max(0.0, start + n * period - time.monotonic()))
        track.finish()
    await asyncio.sleep(0.5)  # let the CONNECTION_CLOSE go out before the process exits
    emit("closed")


class Reader:
    """One group being read: what has arrived so far."""

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence
        self.count = 0
        self.expected = 0
        self.first: float | None = None
        self.last: float | None = None

    def frame(self, payload: bytes) -> None:
        _, _, expected, published = HEADER.unpack_from(payload)
        latency = time.time() - published
        self.expected = expected
        self.count += 1
        if self.first is None:
            self.first = latency
        self.last = latency

    def report(self, outcome: str) -> None:
        complete = int(outcome == "ok" and self.count == self.expected and self.count > 0)
        if outcome == "ok" and not complete:
            outcome = "short"
        first = f"{self.first:.3f}" if self.first is not None else "-"
        last = f"{self.last:.3f}" if self.last is not None else "-"
        emit("group", self.sequence, self.count, complete, first, last, outcome)


async def read_group(group: moq.GroupConsumer, reader: Reader, pending: dict[int, Reader]) -> None:
    try:
        async for frame in group:
            reader.frame(frame.payload)
    except moq.Error as exc:
        pending.pop(reader.sequence, None)
        detail = moq.errors.protocol_error(exc)
        why = type(exc).__name__ if detail is None else f"{detail.kind.name.lower()}/{detail.code}"
        reader.report(f"reset:{why}")
        return
    pending.pop(reader.sequence, None)
    reader.report("ok")


async def subscribe(url: str, name: str, max_age_us: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pending: dict[int, Reader] = {}
    tasks: set[asyncio.Task] = set()

    async def run() -> None:
        async with client(url) as c:
            consumer = await c.announced_broadcast(name)
            track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=max_age_us))
            emit("sub")
            try:
                async for group in track.groups_as_arrived():
                    reader = pending[group.sequence] = Reader(group.sequence)
                    task = asyncio.create_task(read_group(group, reader, pending))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                emit("end", "none")
            except moq.Error as exc:
                emit("end", f"error:{type(exc).__name__}")
            await stop.wait()

    runner = asyncio.create_task(run())
    await stop.wait()
    runner.cancel()
    for task in list(tasks):
        task.cancel()
    for reader in sorted(pending.values(), key=lambda r: r.sequence):
        reader.report("pending")
    emit("closed")


if __name__ == "__main__":
    mode, url, name = sys.argv[1:4]
    try:
        if mode == "pub":
            asyncio.run(publish(url, name, float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])))
        else:
            asyncio.run(subscribe(url, name, int(sys.argv[4])))
    except KeyboardInterrupt:
        pass
