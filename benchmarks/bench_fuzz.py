"""Fuzz the lenient MIDI loader at scale and print outcome counts per mutation kind.

    .venv/bin/python benchmarks/bench_fuzz.py [--count 2000] [--seed 0]

Mutants come from ``tests/data/test_fuzz.py`` (deterministic from the seed). Any broken contract
(an exception other than MidiLoadError, a reason not naming the file, an insane loaded score)
is counted as ``CONTRACT BROKEN`` and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz", REPO / "tests" / "data" / "test_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fuzz = _fuzz_module()
    table: dict[str, Counter[str]] = {k: Counter() for k in fuzz.MUTATORS}
    broken = []
    start = time.perf_counter()
    for name, kind, data in fuzz.mutants(args.count, args.seed):
        try:
            outcome = fuzz.check_one(name, data)
        except Exception as err:  # the point of a fuzzer: record anything unexpected
            outcome = "CONTRACT BROKEN"
            broken.append(f"{name}: {type(err).__name__}: {err}")
        table[kind][outcome] += 1
    elapsed = time.perf_counter() - start
    outcomes = sorted({o for c in table.values() for o in c})
    width = max(len(k) for k in table)
    print(
        f"{args.count} mutants in {elapsed:.2f} s ({args.count / elapsed:.0f}/s), seed {args.seed}"
    )
    print(f"{'mutation':<{width}} " + " ".join(f"{o:>14}" for o in outcomes))
    for kind, counts in table.items():
        print(f"{kind:<{width}} " + " ".join(f"{counts[o]:>14}" for o in outcomes))
    total = sum(table.values(), Counter())
    print(f"{'total':<{width}} " + " ".join(f"{total[o]:>14}" for o in outcomes))
    for line in broken[:20]:
        print(line)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
