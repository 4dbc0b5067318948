"""Where our relay spends its CPU under load: py-spy samples of the relay during a bench.py load.

    .venv/bin/python benchmarks/hotspots.py --engine aioquic --subscribers 50
    .venv/bin/python benchmarks/hotspots.py --engine qh3 --subscribers 100 --top 30 --out /tmp/qh3.txt

Runs one load of benchmarks/bench.py against a fresh relay process and samples it with py-spy
(`pip install -e '.[bench]'`; py-spy needs ptrace, e.g. root) for the load's duration, GIL or not. Prints
the functions with the most samples on top of the stack (self), then the most samples anywhere
in the stack (total), as percentages of all samples, each with its file relative to the package
(`relay/...`) or the library's site-packages path. `--out` keeps the collapsed stacks
(flamegraph.pl input).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench import process_tree, run_load, start_ours

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


def short(file: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    if "/relay/" in file:
        return "relay/" + file.rsplit("/relay/", 1)[1]
    return file


def summarize(collapsed: str, top: int) -> str:
    self_samples: collections.Counter[str] = collections.Counter()
    total_samples: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    n = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        n += k
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part)
            frames.append(f"{m['func']} ({short(m['file'])})" if m else part)
        if not frames:
            continue
        self_samples[frames[-1]] += k
        leaf = FRAME.match(stack.split(";")[-1])
        files[short(leaf["file"]).split("/")[0] if leaf else "?"] += k
        for f in set(frames):
            total_samples[f] += k
    if not n:
        return "no samples"
    out = [f"{n} samples", "", "self % | function"]
    out += [f"{100 * c / n:6.1f} | {f}" for f, c in self_samples.most_common(top)]
    out += ["", "total % | function (relay/ only)"]
    ours = [(f, c) for f, c in total_samples.most_common() if "(relay/" in f]
    out += [f"{100 * c / n:6.1f} | {f}" for f, c in ours[:top]]
    out += ["", "self % by top-level package or file"]
    out += [f"{100 * c / n:6.1f} | {f}" for f, c in files.most_common(12)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="aioquic", help="a bench.py variant, e.g. aioquic, qh3, qh3-w2")
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--mbps", type=float, default=2.0)
    ap.add_argument("--frame-size", type=int, default=1200)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, help="keep the collapsed stacks here")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    tmp = Path(tempfile.mkdtemp())
    relay = start_ours(args.engine, tmp)
    outputs: list[Path] = []
    procs: list[subprocess.Popen] = []
    try:
        # A worker relay: sample the workers (the supervisor only supervises).
        pids = process_tree(relay.proc.pid)
        pids = pids[1:] if len(pids) > 1 else pids
        duration = int(args.seconds + 4)
        for pid in pids:
            out = tmp / f"stacks-{pid}.txt"
            outputs.append(out)
            procs.append(subprocess.Popen([spy, "record", "--format", "raw", "--rate", str(args.rate),
                                           "--duration", str(duration), "--nonblocking", "--pid", str(pid),
                                           "--output", str(out)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        res_box = []
        t = threading.Thread(target=lambda: res_box.append(asyncio.run(run_load(
            relay, args.subscribers, args.seconds, args.mbps, args.frame_size, 30))))
        t.start()
        t.join()
        for p in procs:
            p.wait(duration + 30)
    finally:
        relay.stop()
    res = res_box[0]
    print(f"{res.relay} subs={args.subscribers}: {res.delivered_pct:.1f} % frames, p50 {res.p50_ms:.0f} ms, "
          f"p99 {res.p99_ms:.0f} ms, {res.cpu_s_per_gbit:.1f} CPU s/Gbit")
    collapsed = "\n".join(o.read_text() for o in outputs if o.exists())
    if args.out:
        args.out.write_text(collapsed)
    print(summarize(collapsed, args.top))


if __name__ == "__main__":
    main()
