"""A long fuzzing campaign over every decoder of peer input (tests/fuzz_targets.py).

Each target gets `--inputs` inputs (default 1,000,000): valid encodings from its seeds, mutated
(bit flips, interesting bytes such as varint prefixes, insertions, deletions, truncation,
duplication, splices with other seeds) plus some purely random bytes. An input passes when the
decoder returns or raises its layer's error type; anything else is a failure, counted and kept
(`--failures DIR` writes each distinct one as a file). Deterministic for a given `--seed`.

    nice -n 10 .venv/bin/python benchmarks/fuzz_campaign.py --inputs 1000000 --markdown

The suite's bounded version of this is tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_targets import TARGETS, Target  # noqa: E402

INTERESTING = [b"\x00", b"\xff", b"\x3f", b"\x40", b"\x7f", b"\x80", b"\xbf", b"\xc0", b"\x01", b"\x20",
               b"\x2f", b"\x25", b"\xc0\x00\x00\x00", b"\xff\xff", b"\x7f\xff\xff\xff", b"\xc0" + b"\xff" * 7,
               b"\xff" * 8, b'"', b"\\", b",", b";", b"?", b"=", b"&", b"%", b"/", b"..", b"%2f", b"\xd9\xa3",
               b"\xed\xa0\x80", b"NaN", b"Infinity", b"1e400", b"-1", b"1.5", b"true", b"null", b"[]", b"{}"]


@dataclass
class Result:
    name: str
    inputs: int = 0
    seconds: float = 0.0
    returned: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, tuple[bytes, str]] = field(default_factory=dict)


def mutate(rng: random.Random, seeds: tuple[bytes, ...]) -> bytes:
    roll = rng.random()
    if roll < 0.04 or not seeds:
        return rng.randbytes(rng.randrange(0, 64))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        op = rng.randrange(9)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # set a byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:  # insert an interesting token
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 3:  # overwrite with an interesting token
            token = rng.choice(INTERESTING)
            data[pos : pos + len(token)] = token
        elif op == 4:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        elif op == 5 and data:  # delete a range
            data[pos : pos + rng.randrange(1, 9)] = b""
        elif op == 6:  # truncate
            del data[pos:]
        elif op == 7 and data:  # duplicate a range
            end = min(len(data), pos + rng.randrange(1, 17))
            data[pos:pos] = data[pos:end]
        elif op == 8:  # splice in part of another seed
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            data[pos:pos] = other[start : start + rng.randrange(1, 33)]
    return bytes(data)


def run_target(target: Target, inputs: int, seed: int) -> Result:
    rng = random.Random(f"{seed}/{target.name}")
    result = Result(target.name)
    start = time.perf_counter()
    for _ in range(inputs):
        data = mutate(rng, target.seeds)
        try:
            target.run(data)
            result.returned += 1
        except target.allowed as exc:
            result.errors[type(exc).__name__] += 1
        except Exception as exc:  # the point of the campaign: anything else is a bug
            where = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            result.failures[key] += 1
            result.examples.setdefault(key, (data, f"{type(exc).__name__}: {exc}"))
    result.inputs = inputs
    result.seconds = time.perf_counter() - start
    return result


def table(results: list[Result], markdown: bool) -> str:
    rows = [("decoder", "inputs", "time", "returned", "errors raised (layer's type)", "failures")]
    for r in results:
        errors = ", ".join(f"{name} {n:,}" for name, n in r.errors.most_common()) or "-"
        failures = ", ".join(f"{k} ({n:,})" for k, n in r.failures.most_common()) or "0"
        rows.append((r.name, f"{r.inputs:,}", f"{r.seconds:.0f} s", f"{r.returned:,}", errors, failures))
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder (default 1,000,000)")
    parser.add_argument("--target", action="append", default=[], help="only decoders whose name contains this")
    parser.add_argument("--seed", type=int, default=1, help="random seed (the run is deterministic)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--failures", type=Path, help="write one example input per distinct failure here")
    parser.add_argument("--list", action="store_true", help="list the decoders and exit")
    args = parser.parse_args(argv)
    targets = [t for t in TARGETS if not args.target or any(s in t.name for s in args.target)]
    if args.list:
        print("\n".join(f"{t.name}  (allowed: {', '.join(e.__name__ for e in t.allowed) or 'nothing'})"
                        for t in targets))
        return 0
    results = []
    for target in targets:
        result = run_target(target, args.inputs, args.seed)
        results.append(result)
        print(f"{target.name}: {result.inputs:,} inputs in {result.seconds:.1f} s, "
              f"{sum(result.failures.values()):,} failures", file=sys.stderr, flush=True)
        for key, (data, message) in result.examples.items():
            print(f"  FAILURE {key}: {message[:200]}\n    input {data.hex()[:400]}", file=sys.stderr)
            if args.failures is not None:
                args.failures.mkdir(parents=True, exist_ok=True)
                safe = "".join(c if c.isalnum() else "_" for c in f"{target.name}-{key}")
                (args.failures / f"{safe}.bin").write_bytes(data)
    print(table(results, args.markdown))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
