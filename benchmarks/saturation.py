"""Saturation search: the most subscribers of one track each relay serves well (issue #15).

    .venv/bin/python benchmarks/saturation.py                       # aioquic, qh3, 1 and 2 workers
    .venv/bin/python benchmarks/saturation.py --engines qh3-w2 --max 400

"Served well" at N subscribers (the load of benchmarks/bench.py: one publisher, one group a
second, N real moq-rs subscribers, each on its own connection): at least 99.9 % of the frames
reach every subscriber and the p99 frame latency is at most 2x the p99 of the Rust-stack baseline
relay at the same N, measured in the same run. The baseline runs at each N any of ours is tried
at (once per N); its own figure is the most it serves with 99.9 % of the frames.

The search doubles N from --start until a load is not served well, then bisects between the
last good and the first bad load down to --resolution subscribers. One trial per load: a result
near the boundary can move by a step between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import Relay, Result, run_load, start_baseline, start_ours

MIN_DELIVERED_PCT = 99.9
MAX_P99_RATIO = 2.0


@dataclass
class Search:
    relay: str
    best: int = 0  # the most subscribers served well (0: not even --start)
    first_bad: int | None = None  # the fewest found not served well (None: --max was served)
    trials: int = 0


class Trials:
    """Runs loads (fresh relay process each) and remembers the baseline's result at each N."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.baseline: dict[int, Result] = {}

    def run(self, make: Callable[[], Relay], n: int) -> Result:
        relay = make()
        try:
            res = asyncio.run(run_load(relay, n, self.args.seconds, self.args.mbps, self.args.frame_size, 30,
                                       self.args.max_latency_ms))
        finally:
            relay.stop()
        print(f"  {res.relay:28s} subs={n:4d} {res.delivered_pct:6.2f} % p50={res.p50_ms:7.1f} ms "
              f"p99={res.p99_ms:7.1f} ms", flush=True)
        return res

    def base(self, n: int) -> Result:
        if n not in self.baseline:
            self.baseline[n] = self.run(start_baseline, n)
        return self.baseline[n]

    def good(self, make: Callable[[], Relay], n: int, *, is_baseline: bool = False) -> bool:
        if is_baseline:
            return self.base(n).delivered_pct >= MIN_DELIVERED_PCT
        res = self.run(make, n)
        base = self.base(n)
        # A baseline that itself drops frames at this load still sets the latency bar.
        return res.delivered_pct >= MIN_DELIVERED_PCT and res.p99_ms <= MAX_P99_RATIO * base.p99_ms


def search(trials: Trials, name: str, make: Callable[[], Relay], *, is_baseline: bool = False) -> Search:
    args = trials.args
    out = Search(name)
    n = args.start
    while n <= args.max:
        out.trials += 1
        if not trials.good(make, n, is_baseline=is_baseline):
            out.first_bad = n
            break
        out.best = n
        n *= 2
    else:
        if out.best < args.max:  # the doubling stepped over --max: try --max itself
            out.trials += 1
            if trials.good(make, args.max, is_baseline=is_baseline):
                out.best = args.max
                return out
            out.first_bad = args.max
        else:
            return out
    while out.first_bad is not None and out.first_bad - out.best > args.resolution:
        mid = (out.best + out.first_bad) // 2
        out.trials += 1
        if trials.good(make, mid, is_baseline=is_baseline):
            out.best = mid
        else:
            out.first_bad = mid
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["aioquic", "aioquic-w2", "qh3", "qh3-w2"],
                    help="our relay variants, as for bench.py (e.g. aioquic, qh3-w2)")
    ap.add_argument("--start", type=int, default=25, help="the first load tried")
    ap.add_argument("--max", type=int, default=400, help="the largest load tried")
    ap.add_argument("--resolution", type=int, default=5, help="stop bisecting at this many subscribers")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--mbps", type=float, default=2.0)
    ap.add_argument("--frame-size", type=int, default=1200)
    ap.add_argument("--max-latency-ms", type=int, default=10_000)
    ap.add_argument("--no-baseline-search", action="store_true",
                    help="skip the search of the baseline's own figure (it still runs at every N tried)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    trials = Trials(args, tmp)
    results: list[Search] = []
    for variant in args.engines:
        print(f"ours ({variant}):", flush=True)
        results.append(search(trials, f"ours ({variant})", lambda v=variant: start_ours(v, tmp)))
    if not args.no_baseline_search:
        print("baseline (moq-rs Server):", flush=True)
        results.append(search(trials, "baseline (moq-rs Server)", start_baseline, is_baseline=True))
    print()
    print(f"| relay | most subscribers served (>= {MIN_DELIVERED_PCT} % frames, p99 <= "
          f"{MAX_P99_RATIO:g}x baseline) | first load not served | trials |")
    print("|---|---|---|---|")
    for r in results:
        bad = "-" if r.first_bad is None else str(r.first_bad)
        best = f">= {r.best}" if r.first_bad is None else str(r.best)
        print(f"| {r.relay} | {best} | {bad} | {r.trials} |")
    by_name = {r.relay: r for r in results}
    for r in results:
        if "-w" in r.relay:
            one = by_name.get(r.relay.split("-w")[0] + ")")
            if one is not None and one.best:
                print(f"{r.relay} vs {one.relay}: x{r.best / one.best:.2f}")


if __name__ == "__main__":
    main()
