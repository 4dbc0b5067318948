"""Relay benchmark: our relay (aioquic, qh3) side by side with a baseline made of the Rust stack.

    .venv/bin/python benchmarks/bench.py                     # default matrix, prints a table
    .venv/bin/python benchmarks/bench.py --subscribers 1 10 50 --seconds 10 --mbps 2
    .venv/bin/python benchmarks/bench.py --live --repeat 5   # what a default subscriber gets

For each relay and each subscriber count: one publisher (real moq-rs client) sends a track at
a set bitrate in frames of a set size, one group per second; N subscribers (real clients, one
connection each) read it. Every payload starts with the publish time, so subscribers measure
latency. The relay runs as its own process: its CPU seconds and peak RSS come from /proc.
Relays alternate within one run so both see the same machine state.

`--live` runs the live-delivery cases of benchmarks/live.py instead (late join, burst, overlapping
groups) against the same relays, over each transport the relay serves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import moq
from live import LiveResult, live_table, run_live

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a relay with workers is a supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def proc_peak_rss_mib(pid: int) -> float:
    """Peak RSS of `pid` and its descendants, summed."""
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


@dataclass
class Relay:
    name: str
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def start_ours(variant: str, tmp: Path) -> Relay:
    """`aioquic` or `qh3`, optionally suffixed `-nogso` (one sendto per datagram), `-NNNN`
    (`max_datagram_size`, e.g. `qh3-1452`) and/or `-wN` (N worker processes, e.g. `aioquic-w2`)."""
    port = free_port()
    engine, *flags = variant.split("-")
    quic = f'engine = "{engine}"\n'
    workers = 1
    for flag in flags:
        if flag.startswith("w") and flag[1:].isdigit():
            workers = int(flag[1:])
        elif flag == "nogso":
            quic += "gso = false\n"
        elif flag.isdigit():
            quic += f"max_datagram_size = {flag}\n"
        else:
            raise SystemExit(f"unknown relay variant {variant!r}")
    cfg = tmp / f"bench-{variant}.toml"
    cfg.write_text(f'[log]\nlevel = "info"\n[server]\nbind = "127.0.0.1:{port}"\nworkers = {workers}\n[server.tls]\n'
                   f'generate = ["localhost", "127.0.0.1"]\n[server.quic]\n{quic}'
                   f'[web.http]\nlisten = "127.0.0.1:{port}"\n[auth]\npublic = ""\n')
    proc = subprocess.Popen([sys.executable, "-m", "relay", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_listening(proc, "workers ready" if workers > 1 else "listening addr=")
    return Relay(f"ours ({variant})", proc, port)


def start_baseline() -> Relay:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/baseline_relay.py"), f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wait_listening(proc, "baseline listening", stream="stdout")
    return Relay("baseline (moq-rs Server)", proc, port)


def wait_listening(proc: subprocess.Popen, marker: str, stream: str = "stderr") -> None:
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    deadline = time.monotonic() + 30
    assert pipe is not None
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            raise RuntimeError(f"relay exited: {proc.poll()}")
        if marker in line:
            # Keep draining the pipe so the relay never blocks on a full pipe.
            import threading

            threading.Thread(target=lambda: [None for _ in pipe], daemon=True).start()
            return
    raise RuntimeError("relay did not start")


@dataclass
class Result:
    relay: str
    subscribers: int
    mbps_delivered: float = 0.0
    delivered_pct: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s_per_gbit: float = 0.0
    peak_rss_mib: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)


async def run_load(relay: Relay, subscribers: int, seconds: float, mbps: float, frame_size: int,
                   fps: int, max_latency_ms: int = 10_000) -> Result:
    url = f"moql://127.0.0.1:{relay.port}/bench"
    frames_per_second = max(1, int(mbps * 1e6 / 8 / frame_size))
    interval = 1.0 / frames_per_second
    total_frames = int(frames_per_second * seconds)
    received = [0] * subscribers
    nbytes = [0] * subscribers
    latencies: list[float] = []
    ready = asyncio.Event()
    subscribed = 0
    done = asyncio.Event()

    def make_client():
        return moq.Client(url, tls_verify=False, websocket_enabled=False, reconnect=False)

    async def publisher() -> None:
        async with make_client() as c:
            b = c.create_broadcast("b")
            t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=10_000_000, timescale=1000))
            b.announce()
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(1.0)
            pad = os.urandom(max(0, frame_size - 8))
            group = None
            start = time.perf_counter()
            for i in range(total_frames):
                if i % frames_per_second == 0:
                    if group is not None:
                        group.finish()
                    group = t.append_group()
                group.write_frame(struct.pack(">d", time.time()) + pad)
                next_at = start + (i + 1) * interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if group is not None:
                group.finish()
            await asyncio.sleep(2.0)
            done.set()

    async def subscriber(k: int) -> None:
        nonlocal subscribed
        async with make_client() as c:
            consumer = await asyncio.wait_for(c.announced_broadcast("b"), 30)
            track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=max_latency_ms * 1000))
            subscribed += 1
            if subscribed == subscribers:
                ready.set()

            async def read() -> None:
                async for group in track.groups_as_arrived():
                    async for frame in group:
                        now = time.time()
                        received[k] += 1
                        nbytes[k] += len(frame.payload)
                        latencies.append((now - struct.unpack(">d", frame.payload[:8])[0]) * 1000)

            reader = asyncio.ensure_future(read())
            await done.wait()
            reader.cancel()

    cpu0 = proc_cpu_seconds(relay.proc.pid)
    t0 = time.perf_counter()
    await asyncio.gather(publisher(), *(subscriber(k) for k in range(subscribers)))
    elapsed = time.perf_counter() - t0
    cpu = proc_cpu_seconds(relay.proc.pid) - cpu0
    delivered_bits = sum(nbytes) * 8
    res = Result(relay.name, subscribers)
    res.mbps_delivered = delivered_bits / seconds / 1e6
    res.delivered_pct = 100.0 * sum(received) / (total_frames * subscribers)
    if os.environ.get("BENCH_PER_SUBSCRIBER"):
        print("per subscriber:", sorted(received), file=sys.stderr)
    if latencies:
        lat = sorted(latencies)
        res.p50_ms = statistics.median(lat)
        res.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    res.cpu_s_per_gbit = cpu / (delivered_bits / 1e9) if delivered_bits else float("inf")
    res.peak_rss_mib = proc_peak_rss_mib(relay.proc.pid)
    del elapsed
    return res


def table(results: list[Result]) -> str:
    head = "| relay | subs | Mbit/s delivered | frames delivered | p50 ms | p99 ms | CPU s/Gbit | peak RSS MiB |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.relay} | {r.subscribers} | {r.mbps_delivered:.1f} | {r.delivered_pct:.1f} % | "
                     f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.cpu_s_per_gbit:.1f} | {r.peak_rss_mib:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--mbps", type=float, default=2.0)
    ap.add_argument("--frame-size", type=int, default=1200)
    ap.add_argument("--engines", nargs="+", default=["aioquic", "qh3"],
                    help="our relay variants: aioquic, qh3, with -nogso and/or -NNNN (max_datagram_size)")
    ap.add_argument("--max-latency-ms", type=int, default=10_000,
                    help="every subscriber's max latency (moq-lite): older groups may be dropped")
    ap.add_argument("--live", action="store_true", help="run the live-delivery cases (benchmarks/live.py)")
    ap.add_argument("--repeat", type=int, default=5, help="--live: repetitions of each case")
    ap.add_argument("--transports", nargs="+", default=["moql", "https", "ws"], help="--live: transports")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if args.live:
        main_live(args, tmp)
        return
    results: list[Result] = []
    for n in args.subscribers:
        # Alternate: each relay gets the same load right after the other, fresh process each time.
        for make in [*(lambda e=e: start_ours(e, tmp) for e in args.engines), start_baseline]:
            relay = make()
            try:
                res = asyncio.run(run_load(relay, n, args.seconds, args.mbps, args.frame_size, 30,
                                           args.max_latency_ms))
            finally:
                relay.stop()
            results.append(res)
            print(f"{res.relay:28s} subs={n:3d} {res.mbps_delivered:7.1f} Mbit/s {res.delivered_pct:6.1f} % "
                  f"p50={res.p50_ms:6.1f} ms p99={res.p99_ms:7.1f} ms cpu={res.cpu_s_per_gbit:6.1f} s/Gbit "
                  f"rss={res.peak_rss_mib:5.0f} MiB", flush=True)
    print()
    print(table(results))
    print()
    base = {r.subscribers: r for r in results if r.relay.startswith("baseline")}
    for r in results:
        b = base.get(r.subscribers)
        if b is None or r is b:
            continue
        cpu_ratio = r.cpu_s_per_gbit / b.cpu_s_per_gbit if b.cpu_s_per_gbit else float("inf")
        p99_ratio = r.p99_ms / b.p99_ms if b.p99_ms else float("inf")
        print(f"{r.relay} vs baseline, {r.subscribers} subs: CPU/Gbit x{cpu_ratio:.2f}, p99 latency x{p99_ratio:.2f}, "
              f"delivered {r.delivered_pct:.1f} % vs {b.delivered_pct:.1f} %")


def main_live(args: argparse.Namespace, tmp: Path) -> None:
    results: list[LiveResult] = []
    for transport in args.transports:
        for make in [*(lambda e=e: start_ours(e, tmp) for e in args.engines), start_baseline]:
            relay = make()
            try:
                if relay.name.startswith("baseline") and transport == "ws":
                    continue  # the Rust Server has no WebSocket listener
                res = asyncio.run(run_live(relay.name, relay.port, transport, args.repeat))
            finally:
                relay.stop()
            results.append(res)
            print(live_table([res]).splitlines()[-1], flush=True)
    print()
    print(live_table(results))


if __name__ == "__main__":
    main()
