"""Analysis figures of generated pieces beside the Bach test split (issue 11, item 8).

    .venv/bin/aurl generate --num 100 --bars 16 --seed 11 --no-wav --out out/eval_before   # if not there yet
    .venv/bin/python benchmarks/bench_analysis_generated.py [--samples out/eval_before] [--data data/bach]

Runs the analysis-based features of ``aurl.evaluation.analysis_features`` (the ones
``aurl evaluate --samples`` now reports) on every generated piece and on the source files of the
test split, and compares them with the evaluation suite's own set comparison (overlap area of the
per-piece distributions, 1 = as close as the corpus to itself). Writes
benchmarks/results/analysis_generated.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = ["key_stability", "chord_vocabulary", "chord_fifth_motion", "repeated_bars"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=Path, default=REPO / "out" / "eval_before")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "bach")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "analysis_generated.json"
    )
    args = ap.parse_args()
    print(f"command: .venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    import aurl.evaluation.analysis_features  # noqa: F401  (registers the features)
    from aurl.evaluation import samples as S
    from aurl.evaluation.features import FEATURES

    specs = {n: FEATURES[n] for n in NAMES}
    t0 = time.time()
    gen, skipped = S.load_folder(args.samples)
    test, kind = S.reference_pieces(args.data, "test")
    train, _ = S.reference_pieces(args.data, "train")
    tables = {
        name: S.feature_table(p, NAMES)
        for name, p in (("generated", gen), ("bach_test", test), ("bach_train", train))
    }
    out = {
        "command": " ".join(["benchmarks/bench_analysis_generated.py", *sys.argv[1:]]),
        "samples": str(args.samples),
        "pieces": {k: len(v) for k, v in tables.items()},
        "skipped": len(skipped),
        "reference_kind": kind,
        "generated_vs_test": S.compare_tables(tables["generated"], tables["bach_test"], specs),
        "train_vs_test": S.compare_tables(tables["bach_train"], tables["bach_test"], specs),
        "seconds": round(time.time() - t0, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        "| feature | Bach test mean | Bach train mean | generated mean | overlap train vs test | overlap generated vs test |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n in NAMES:
        g, t = out["generated_vs_test"]["features"][n], out["train_vs_test"]["features"][n]
        print(
            f"| {n} | {g['reference_mean']:.3g} | {t['samples_mean']:.3g} | {g['samples_mean']:.3g} | "
            f"{t['overlap_area']:.3f} | {g['overlap_area']:.3f} |"
        )
    print({k: out[k] for k in ("pieces", "skipped", "seconds", "loadavg")})
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
