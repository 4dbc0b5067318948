"""A slow subscriber connection (issue #15 item 2): its stale groups are dropped, not queued, and
it never delays the other subscribers of the track.

Four hosts in network namespaces (tests/netns.py): our relay R, a moq-rs publisher P at about
2 Mbit/s (a group of 10 frames of 12 KB every 0.5 s, tests/slow_client.py), and two moq-rs
subscribers with a small max latency: F on a plain link and S behind a 1 Mbit/s token bucket
(tbf on its port of the bridge: what the relay sends to S). Every frame carries its publish time
(CLOCK_REALTIME, shared by the namespaces), so each subscriber prints the latency of the first
and last frame of every group it reads, and how the group ended.

Were the relay to queue what S cannot take, S's latency would grow by about half a second per
second of the run (2 Mbit/s into 1). It must stay bounded instead: the relay drops S's groups
once stale under S's max latency (counted in moq_relay_drops_total{reason="stale"}), while F
gets every group, complete and on time. The figures are printed (`pytest -s`); the assertions
hold them to generous bounds only.

The latency S reads cannot tell alone: moq-rs itself gives up on a group older than its max
latency (error Old) without stopping the stream, so a relay that queues shows up instead as a
link busy with bytes S throws away. Hence the checks on the drop counter and on how much of
what S's link carried S could use. (S completes hardly any group, in either case: every group
is sent newest first, and the link takes half of one before the next one starts.)
"""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import netns
import pytest
import trio
from test_multihost import INTERNAL, PORT, Relay, until

pytestmark = pytest.mark.netns

CLIENT = Path(__file__).with_name("slow_client.py")
PERIOD = 0.5  # one group per PERIOD ...
FRAMES = 10  # ... of this many frames ...
FRAME_BYTES = 12_000  # ... of this size: 1.92 Mbit/s of payload
RUN = 18.0  # seconds of publishing
SLOW_RATE = "1mbit"
R, P, F, S = 20, 21, 22, 23  # last octets


@dataclass
class Group:
    sequence: int
    frames: int
    complete: bool
    first: float | None  # latency of its first frame, seconds
    last: float | None  # ... and of its last
    outcome: str  # ok | short | reset:<error> | pending


@dataclass
class Client:
    """A tests/slow_client.py process (publisher or subscriber) on `host`."""

    host: netns.Host
    out: Path
    proc: subprocess.Popen = field(init=False)

    @classmethod
    def start(cls, host: netns.Host, relay: Relay, tmp_path: Path, *args: object) -> Client:
        out = tmp_path / f"{args[0]}-{host.name}.txt"
        client = cls(host, out)
        argv = [sys.executable, str(CLIENT), str(args[0]), f"moql://{relay.host.addr}:{PORT}/anon", "cam",
                *map(str, args[1:])]
        with open(out, "w") as stdout, open(out.with_suffix(".err"), "w") as stderr:
            client.proc = host.popen(argv, stdout=stdout, stderr=stderr)
        return client

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.out.read_text().splitlines() if line.strip()]

    def has(self, kind: str) -> bool:
        return any(len(p) > 1 and p[1] == kind for p in self.lines())

    def published(self) -> list[int]:
        return [int(p[2]) for p in self.lines() if p[1] == "group"]

    def groups(self) -> list[Group]:
        out = []
        for p in self.lines():
            if p[1] == "group" and len(p) == 8:
                first, last = (None if x == "-" else float(x) for x in p[5:7])
                out.append(Group(int(p[2]), int(p[3]), p[4] == "1", first, last, p[7]))
        return sorted(out, key=lambda g: g.sequence)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stderr(self) -> str:
        return self.out.with_suffix(".err").read_text()


def shape(network: netns.Network, host: netns.Host) -> str | None:
    """Limit what the bridge sends to `host` to SLOW_RATE; why not, or None."""
    argv = ["tc", "qdisc", "add", "dev", host.port, "root", "tbf", "rate", SLOW_RATE, "burst", "16kb",
            "latency", "400ms"]
    try:
        done = subprocess.run([netns.IP, "netns", "exec", network.switch, *argv], capture_output=True,
                              text=True, timeout=20)
    except OSError as exc:
        return f"tc: {exc}"
    return None if done.returncode == 0 else f"`{' '.join(argv)}` failed: {done.stderr.strip()}"


def link_stats(network: netns.Network, host: netns.Host) -> tuple[int, int]:
    """(bytes sent, packets dropped) by the token bucket in front of `host`."""
    out = subprocess.run([netns.IP, "netns", "exec", network.switch, "tc", "-s", "qdisc", "show", "dev", host.port],
                         capture_output=True, text=True, timeout=20).stdout
    m = re.search(r"Sent (\d+) bytes \d+ pkt \(dropped (\d+)", out)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def drops(relay: Relay) -> dict[str, float]:
    """moq_relay_drops_total by reason, from the relay's internal /metrics."""
    body = relay.get("/metrics", INTERNAL) or ""
    return {m[1]: float(m[2]) for m in re.finditer(r'^moq_relay_drops_total\{reason="(\w+)"\} (\S+)$', body, re.M)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def thirds(groups: list[Group]) -> tuple[list[Group], list[Group]]:
    """The first and the last third."""
    n = len(groups) // 3
    return groups[:n], groups[-n:] if n else []


def report(scenario: str, **values: object) -> None:
    shown = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"\nslow subscriber | {scenario} | {shown}")


@pytest.mark.parametrize("max_age_us", [500_000, 0], ids=["500ms", "newest"])
async def test_slow_subscriber_drops_stale_and_delays_no_one(net, tmp_path, max_age_us) -> None:
    """F and S subscribe with max latency `max_age_us` (0: the newest group only). F gets every
    group, complete and within a fraction of a second; S gets part of every group (its link
    takes half of each) at a latency that does not grow, because the relay aborts S's groups as
    they go stale instead of leaving them queued for S's connection."""
    hosts = {name: net.add(name, octet) for name, octet in (("r", R), ("p", P), ("f", F), ("s", S))}
    why = shape(net, hosts["s"])
    if why:
        pytest.skip(f"cannot shape the slow subscriber's link: {why}")
    relay = Relay(hosts["r"], tmp_path, [])  # no cluster: one relay
    with trio.fail_after(RUN + 90):
        relay.start()
        await until(lambda: relay.get("/health") is not None, 30, "the relay healthy", relay)
        before = await trio.to_thread.run_sync(drops, relay)
        fast = Client.start(hosts["f"], relay, tmp_path, "sub", max_age_us)
        slow = Client.start(hosts["s"], relay, tmp_path, "sub", max_age_us)
        pub = Client.start(hosts["p"], relay, tmp_path, "pub", PERIOD, FRAMES, FRAME_BYTES)
        # The publisher announces, then waits a second before its first group: time to subscribe.
        await until(lambda: fast.has("sub") and slow.has("sub"), 30,
                    lambda: f"both subscribed (F: {fast.stderr()[-300:]!r}, S: {slow.stderr()[-300:]!r})", relay)
        await until(lambda: pub.has("first"), 30, lambda: f"publishing ({pub.stderr()[-300:]!r})", relay)
        await trio.sleep(RUN)
        pub.stop()
        await trio.sleep(1.0)  # the last groups on their way
        for sub in (fast, slow):
            sub.stop()
        after = await trio.to_thread.run_sync(drops, relay)
        link_bytes, link_dropped = link_stats(net, hosts["s"])
        assert relay.proc is not None and relay.proc.poll() is None, "the relay exited"
        relay.kill()

    published = pub.published()
    f_groups, s_groups = fast.groups(), slow.groups()
    f_ok = [g for g in f_groups if g.complete]
    f_lat = [x for g in f_groups for x in (g.first, g.last) if x is not None]
    s_seen = [g for g in s_groups if g.last is not None]
    s_ok = [g for g in s_groups if g.complete]
    s_reset = [g for g in s_groups if g.outcome.startswith("reset")]
    early, late = thirds(s_seen)
    early_s = statistics.median(g.last for g in early) if early else float("nan")
    late_s = statistics.median(g.last for g in late) if late else float("nan")
    s_worst = max((g.last for g in s_seen), default=float("nan"))
    stale = after.get("stale", 0) - before.get("stale", 0)
    # What S read, against what its link carried: a link busy with groups S has no use for any
    # more (queued past their latency) would show here, whatever the latency of the rest.
    useful = sum(g.frames for g in s_groups) * FRAME_BYTES / max(1, link_bytes)
    report(f"max latency {max_age_us // 1000} ms", published=len(published),
           F_complete=len(f_ok), F_p50_s=percentile(f_lat, 0.5), F_p99_s=percentile(f_lat, 0.99),
           S_groups_seen=len(s_seen), S_complete=len(s_ok), S_aborted=len(s_reset),
           S_frames=sum(g.frames for g in s_groups), S_last_frame_median_first_third_s=early_s,
           S_last_frame_median_last_third_s=late_s, S_worst_s=s_worst,
           S_link_kbit_s=link_bytes * 8 / 1000 / RUN, S_link_useful=useful, S_link_dropped_packets=link_dropped,
           relay_stale_drops=stale, relay_inflight_drops=after.get("inflight", 0) - before.get("inflight", 0))
    print("  S per group (frames, outcome): " + " ".join(
        f"{g.sequence}:{g.frames}{'ok' if g.complete else g.outcome[0]}" for g in s_groups))

    assert len(published) >= RUN / PERIOD * 0.8, f"the publisher fell behind: {pub.stderr()[-500:]}"
    # F: every group, complete (the last one may still be on its way), frames within 1.5 s.
    missing = sorted(set(published) - {g.sequence for g in f_ok})
    assert len(missing) <= 1, f"F missed groups {missing}"
    assert percentile(f_lat, 0.99) < 1.5, f_lat
    # S: part of most groups, every frame it got within max latency + two group periods + 2 s
    # (a queue would put it about 6 s behind by the end) and no later at the end than at the start.
    assert len(s_seen) >= len(published) / 2, [(g.sequence, g.outcome) for g in s_groups]
    assert s_worst < max_age_us / 1e6 + 2 * PERIOD + 2.0, [(g.sequence, g.last) for g in s_seen]
    assert late_s < early_s + 1.0, (early_s, late_s)
    # ... because the relay dropped S's stale groups (F has none) rather than sending them late.
    assert stale > 0, after
    assert len(s_ok) < len(f_ok)
    assert useful > 0.5, f"S read {useful:.0%} of what its link carried"
