"""Do 3-minute pieces keep their key, density and voices to the end? Features per minute.

    python benchmarks/bench_long_pieces.py --pieces DIR [DIR ...] --labels before after \
        --reference data/bach --split test --out benchmarks/results/long_pieces

Each DIR holds pieces of `aurl generate --seconds 180` (``piece_XX.mid``). Every piece is cut into
minutes (by its own tempo map) and each minute is measured with the evaluation suite's features
(``aurl.evaluation.features``); the Bach test split's mean per-piece value is the yardstick (its
chorales last ~1 minute). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import symusic

from aurl.evaluation.features import Piece, compute_features, piece_from_score
from aurl.evaluation.samples import reference_pieces

FEATURES = ["polyphony", "note_density", "in_key_rate", "scale_consistency", "pitch_class_entropy",
            "longest_note", "programs_used"]  # fmt: skip


def minute(piece: Piece, k: int) -> Piece:
    """The notes of ``piece`` starting in minute ``k`` (seconds [60k, 60k+60)), clipped to it."""
    sel = (piece.onset_s >= 60 * k) & (piece.onset_s < 60 * (k + 1))
    end_s = 60.0 * (k + 1)
    # a note held past the minute's end counts only up to it (beats scaled like its seconds)
    dur_s = np.minimum(piece.duration_s[sel], end_s - piece.onset_s[sel])
    scale = np.divide(
        dur_s, piece.duration_s[sel], out=np.ones_like(dur_s), where=piece.duration_s[sel] > 0
    )
    # the minute starts at beat 0 and second 0, as a piece of its own (density counts its beats)
    start_beat = float(np.interp(60.0 * k, piece.onset_s, piece.onset)) if len(piece.onset) else 0.0
    return replace(
        piece, onset=piece.onset[sel] - start_beat, duration=piece.duration[sel] * scale,
        onset_s=piece.onset_s[sel] - 60.0 * k,
        duration_s=dur_s, pitch=piece.pitch[sel], program=piece.program[sel], drum=piece.drum[sel],
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", nargs="+", type=Path, required=True)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--reference", type=Path, default=Path("data/bach"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--minutes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/long_pieces"))
    args = ap.parse_args()
    print("command: python " + " ".join(sys.argv))
    ref, _ = reference_pieces(args.reference, args.split)
    ref_mean = {f: float(np.nanmean([compute_features(p, [f])[f] for p in ref])) for f in FEATURES}
    result = {"command": "python " + " ".join(sys.argv), "reference": ref_mean, "runs": {}}
    for label, folder in zip(args.labels, args.pieces, strict=True):
        files = sorted(folder.glob("piece_*.mid"))
        per_min = {f: [[] for _ in range(args.minutes)] for f in FEATURES}
        for path in files:
            piece = piece_from_score(symusic.Score(str(path)), path.name)
            for k in range(args.minutes):
                values = compute_features(minute(piece, k), FEATURES)
                for f in FEATURES:
                    per_min[f][k].append(float(values[f]))
        result["runs"][label] = {
            "pieces": [str(p) for p in files],
            "per_minute_mean": {f: [float(np.nanmean(v)) for v in per_min[f]] for f in FEATURES},
        }
    lines = [f"Features per minute of `--seconds 180` pieces, mean over pieces; `{args.reference}` "
             f"{args.split} split as reference.", "",
             "| feature | Bach " + args.split + " | " + " | ".join(
                 f"{lab} min {k + 1}" for lab in args.labels for k in range(args.minutes)) + " |",
             "|---|---:|" + "---:|" * (len(args.labels) * args.minutes)]  # fmt: skip
    for f in FEATURES:
        cells = [
            f"{v:.3g}" for lab in args.labels for v in result["runs"][lab]["per_minute_mean"][f]
        ]
        lines.append(f"| {f} | {ref_mean[f]:.3g} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
