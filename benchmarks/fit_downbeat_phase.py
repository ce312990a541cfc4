"""Fit the bar-phase weights shipped in ``src/aurl/analysis/data/downbeat_phase.json``.

    .venv/bin/python benchmarks/fit_downbeat_phase.py        # ~1-2 minutes on 1 core

POP909 songs merged into one track, beats inferred (``track_beats``), melody from the shipped
scorer (``extract_melody``). For each song, the bar length comes from ``beats.bar_length`` and
every candidate phase gets the mean of ``beats.beat_evidence`` on its beats; the target is the
share of the annotated phrase boundaries (``structure.json``, annotator 1; 2 for song 062) that
fall on each phase. A linear score over the evidence is fitted by softmax cross-entropy on songs
001-600; the script reports, for 601-700 (not fitted on), the share of annotated boundaries that
land on the chosen phase with the old rule (bass onsets + chord change) and with the new weights.
Songs 701-800 (held out) are never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop909_analysis_data as pop

from aurl.analysis import beats as bt
from aurl.analysis.melody import extract_melody
from aurl.analysis.notes import score_notes

OUT = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "aurl"
    / "analysis"
    / "data"
    / "downbeat_phase.json"
)
OLD_RULE = np.zeros(bt.N_EVIDENCE)
OLD_RULE[[0, 3]] = 1.0  # the previous rule: chord change + bass onsets, equal weights


def song(i: int) -> dict | None:
    score = pop.merged_score(i)
    notes = score_notes(score)
    melody = extract_melody(notes=notes)
    beats = bt.track_beats(score, notes, melody=melody).beats
    m = bt.bar_length(notes, beats)
    period = float(np.median(np.diff(beats)))
    ann = "2" if i == 62 else "1"
    sections = pop.structure()[f"{i:03d}"]["labels"][ann]["sections"]
    hits = np.zeros(m)
    for s in sections[1:]:
        k = int(np.argmin(np.abs(beats - s["start"])))
        if abs(beats[k] - s["start"]) < 0.3 * period:
            hits[k % m] += 1
    if hits.sum() == 0:
        return None
    ev = bt.phase_evidence(bt.beat_evidence(notes, beats, melody), m)
    return {"song": i, "hits": hits / hits.sum(), "evidence": ev}


def on_phase(rows: list[dict], w: np.ndarray) -> float:
    """Mean share of annotated boundaries on the phase that ``w`` chooses."""
    return float(np.mean([r["hits"][int(np.argmax(r["evidence"] @ w))] for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-last", type=int, default=600)
    ap.add_argument("--last", type=int, default=700)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.last > 700:
        raise SystemExit("--last must stay <= 700: 701-800 are the held-out songs")
    torch.set_num_threads(1)
    print(f"command: {' '.join(sys.argv)}", flush=True)
    t0 = time.time()
    rows = [r for r in (song(i) for i in range(1, args.last + 1)) if r is not None]
    train = [r for r in rows if r["song"] <= args.train_last]
    val = [r for r in rows if r["song"] > args.train_last]
    ev = [torch.tensor(r["evidence"], dtype=torch.float32) for r in train]
    tg = [torch.tensor(r["hits"], dtype=torch.float32) for r in train]
    w = torch.zeros(bt.N_EVIDENCE, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = sum(
            -(t * torch.log_softmax(3.0 * (e @ w), 0)).sum() for e, t in zip(ev, tg, strict=True)
        )
        loss = loss / len(ev) + args.l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weights = w.detach().double().numpy()
    old, new = on_phase(val, OLD_RULE), on_phase(val, weights)
    first, last = val[0]["song"], val[-1]["song"]
    print(
        f"boundaries on the chosen bar phase, {first:03d}-{last:03d}: old rule {old:.4f}, fitted {new:.4f}"
    )
    print(
        f"same on the fitted songs 001-{args.train_last:03d}: old {on_phase(train, OLD_RULE):.4f}, fitted {on_phase(train, weights):.4f}"
    )
    out = {
        "note": (
            f"Fitted by benchmarks/fit_downbeat_phase.py on POP909 001-{args.train_last:03d} "
            f"(tracks merged, inferred beats, shipped melody scorer); annotated phrase boundaries "
            f"on the chosen phase in {first:03d}-{last:03d}: {new:.4f} (old rule {old:.4f}); "
            "701-800 never read."
        ),
        "columns": [
            "chord change 1 beat",
            "chroma change 2 beats",
            "chroma change 4 beats",
            "bass onsets",
            "onsets below E3",
            "onset count",
            "onset loudness",
            "notes longer than 1.5 beats",
            "bass profile change",
            "melody onsets",
            "melody note length",
        ],
        "weights": np.round(weights, 4).tolist(),
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
