"""Count what issue 15 forbids in folders of generated pieces.

    python benchmarks/bench_corpus_rules.py out/eval_before out/eval_final \
        --out benchmarks/results/corpus_rules

For each folder of `aurl generate` output (``piece_XX.mid`` + ``samples.json``): notes longer than
12 beats (Bach's longest) and than 4 beats (Bach: 0.05 % of notes), pieces with more than one
program, pieces under 20 notes, the largest number of notes sounding at once, and MusicXML exports
that failed (``musicxml_error`` in samples.json). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import symusic


def count(folder: Path) -> dict:
    files = sorted(folder.glob("piece_*.mid"))
    durations, programs, notes, poly = [], [], [], []
    for path in files:
        score = symusic.Score(str(path)).to("quarter")
        tracks = [t for t in score.tracks if len(t.notes)]
        arrays = [t.notes.numpy() for t in tracks]
        d = np.concatenate([a["duration"] for a in arrays]) if arrays else np.zeros(0)
        starts = np.concatenate([a["time"] for a in arrays]) if arrays else np.zeros(0)
        durations.append(d)
        programs.append(len({t.program for t in tracks}))
        notes.append(len(d))
        # most notes sounding at once: sweep over onsets (+1) and ends (-1), ends first at ties
        events = sorted(
            [(t, 1) for t in starts] + [(t + x, -1) for t, x in zip(starts, d, strict=True)]
        )
        level, most = 0, 0
        for _, step in events:
            level += step
            most = max(most, level)
        poly.append(most)
    samples = folder / "samples.json"
    failures = 0
    if samples.is_file():
        pieces = json.loads(samples.read_text())["pieces"]
        failures = sum("musicxml_error" in p["files"] for p in pieces)
    all_d = np.concatenate(durations) if durations else np.zeros(0)
    return {
        "folder": str(folder),
        "pieces": len(files),
        "notes": len(all_d),
        "notes_over_12_beats": int((all_d > 12 + 1e-6).sum()),
        "notes_over_4_beats_pct": round(100 * float((all_d > 4 + 1e-6).mean()), 3)
        if len(all_d)
        else 0.0,
        "longest_note_beats": float(all_d.max()) if len(all_d) else 0.0,
        "pieces_with_more_than_one_program": int(sum(p > 1 for p in programs)),
        "pieces_under_20_notes": int(sum(n < 20 for n in notes)),
        "most_notes_at_once": int(max(poly, default=0)),
        "musicxml_failures": failures,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/corpus_rules"))
    args = ap.parse_args()
    command = "python " + " ".join(sys.argv)
    print(f"command: {command}")
    rows = [count(f) for f in args.folders]
    keys = [k for k in rows[0] if k != "folder"]
    lines = ["| folder | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += ["| " + r["folder"] + " | " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    md = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=2) + "\n"
    )
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
