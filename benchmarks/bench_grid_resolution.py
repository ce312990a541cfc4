"""What the grid VAE's time grid and pitch range lose on a prepared corpus (issue 13).

    python benchmarks/bench_grid_resolution.py data/bach --steps-per-beat 4 --pitches 24 97

Decodes every piece of every split from its tokens (the music the models train on), counts the
note onsets that do not fall on a grid of ``--steps-per-beat`` steps per beat and the notes outside
``--pitches LOW HIGH`` (HIGH excluded), and writes ``benchmarks/results/grid_resolution.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from fractions import Fraction
from pathlib import Path

from aurl.config import atomic_write_text
from aurl.data.dataset import PreparedData

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data", type=Path)
    p.add_argument("--steps-per-beat", type=int, default=4)
    p.add_argument("--pitches", type=int, nargs=2, default=[24, 97])
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "grid_resolution.json"
    )
    args = p.parse_args()
    prepared = PreparedData(args.data)
    tok = prepared.tokenizer
    onsets = off_grid = outside = pieces = 0
    lo, hi = args.pitches
    for split in ("train", "val", "test"):
        part = prepared.split(split)
        for i in range(len(part)):
            score = tok.decode(part.piece(i))
            tpq = score.ticks_per_quarter
            pieces += 1
            for track in score.tracks:
                for n in track.notes:
                    onsets += 1
                    step = Fraction(int(n.time) * args.steps_per_beat, tpq)
                    off_grid += step.denominator != 1
                    outside += not lo <= n.pitch < hi
    result = {
        "command": "python benchmarks/bench_grid_resolution.py " + shlex.join(sys.argv[1:]),
        "data": str(args.data),
        "pieces": pieces,
        "onsets": onsets,
        "steps_per_beat": args.steps_per_beat,
        "onsets_off_grid": off_grid,
        "pitch_range": [lo, hi - 1],
        "notes_outside_pitch_range": outside,
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
