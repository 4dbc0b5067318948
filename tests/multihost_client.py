"""The moq-rs client as a process inside a host's namespace (tests/test_multihost.py).

    python multihost_client.py pub <url> <name> [period]
    python multihost_client.py sub <url> <name>

Both print one line per event to stdout, `<CLOCK_MONOTONIC seconds> <event> [detail]` (the
clock is shared by all network namespaces, so the test can line events up with its own):

- pub: `first <n>` once, then publishes group after group of one frame b"<name>-<n>" where n is
  the monotonic time in periods: a publisher that takes over a path carries on the numbering,
  whatever its own group sequence (which starts at 0, as a restarted publisher's would).
  SIGTERM ends the track, closes the session and prints `closed`.
- sub: `sub` when subscribed, `group <n>` per group (in order, skipping forward if behind),
  `end <why>` when the track ends or fails; then it waits for the broadcast to be announced
  again and resubscribes, as a player would. A track silent for STALL seconds, or a group
  whose frames stop for that long, counts as ended (`end stall`). A session that fails is
  redialed after a short pause (`session <why>`).

Frames carry timestamps, as media does, and the subscriber asks for a max latency of
LATENCY_US, not the publisher's 30 s. After a partition heals, the relay next to the publisher
subscribes afresh and moq-rs answers with its whole 30 s cache at once: arriving together, the
groups' age shows only in their timestamps (without them, some 170 groups went on to B's
subscriber). moq-rs 0.5.1 then drops groups from its own cache while the application holds one
of them (it sends STOP_SENDING for the stream) and that group's frame read waits forever, with
no error; moq-net's model since aborts an evicted group with Old for that reason. So a burst
stays within 5 s (some 50 groups), and the stall watchdog covers the group read too: a stuck
group ends the subscription, as a player's watchdog would.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import moq

STALL = 8.0
LATENCY_US = 5_000_000


def emit(*parts: object) -> None:
    print(f"{time.monotonic():.3f}", *parts, flush=True)


def client(url: str) -> moq.Client:
    return moq.Client(url, tls_verify=False, reconnect=False)


async def publish(url: str, name: str, period: float) -> None:
    """Until SIGTERM, which ends the track and closes the session cleanly (`closed`)."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with client(url) as c:
        broadcast = c.create_broadcast(name)
        track = broadcast.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        broadcast.announce()
        first = True
        while not stop.is_set():
            n = int(time.monotonic() / period)
            group = track.append_group()
            # Stamped as media is (microseconds): relays judge a burst's staleness by it.
            group.write_frame(b"%s-%d" % (name.encode(), n), int(time.monotonic() * 1e6))
            group.finish()
            if first:
                emit("first", n)
                first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period - time.monotonic() % period)
        track.finish()
    await asyncio.sleep(0.5)  # let the CONNECTION_CLOSE go out before the process exits
    emit("closed")


async def read_all(group) -> bytes:
    return b"".join([f.payload async for f in group])


async def subscribe(url: str, name: str) -> None:
    while True:
        try:
            async with client(url) as c:
                while True:
                    consumer = await c.announced_broadcast(name)
                    wish = moq.Subscription(priority=1, max_age_us=LATENCY_US)
                    track = await consumer.subscribe_track("v", wish)
                    emit("sub")
                    why = "none"
                    try:
                        while True:
                            group = await asyncio.wait_for(track.next_group(), STALL)
                            if group is None:
                                break
                            payload = await asyncio.wait_for(read_all(group), STALL)
                            emit("group", payload.rsplit(b"-", 1)[1].decode())
                    except TimeoutError:
                        why = "stall"
                        track.cancel()
                    except moq.Error as exc:
                        why = f"error:{type(exc).__name__}"
                    emit("end", why)
                    if why == "none":
                        # Ended cleanly while still announced: its cached groups would come again
                        # at once; give the announcement time to change.
                        await asyncio.sleep(0.2)
        except (moq.Error, OSError) as exc:
            emit("session", type(exc).__name__)
            await asyncio.sleep(0.5)


if __name__ == "__main__":
    mode, url, name = sys.argv[1:4]
    try:
        if mode == "pub":
            asyncio.run(publish(url, name, float(sys.argv[4]) if len(sys.argv) > 4 else 0.1))
        else:
            asyncio.run(subscribe(url, name))
    except KeyboardInterrupt:
        pass
