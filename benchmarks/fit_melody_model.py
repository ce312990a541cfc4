"""Fit the melody note scorer shipped in ``src/aurl/analysis/data/melody_model.json``.

    .venv/bin/python benchmarks/fit_melody_model.py          # ~5-8 minutes on 1 core

POP909 songs, tracks merged (so the networks see only the music): a note's target is 1 when a
MELODY-track note has the same pitch and onset (within 1 ms). Stage 1 scores
``melody.note_features`` with a 14-32-1 network; each later stage scores those features plus
``melody.context_features`` of every earlier stage's probabilities with an F-48-1 network (stacking).
All stages are fitted with Adam on binary cross-entropy on songs 001-600 (``--train-last``); the
threshold is then chosen by mean note F1 (mir_eval, 50 ms onsets, no offsets) on songs 601-700,
which no stage was fitted on. Songs 701-800 (held out) are never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mir_eval
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop909_analysis_data as pop

from aurl.analysis import melody as mel
from aurl.analysis.notes import score_notes

OUT = (
    Path(__file__).resolve().parents[1] / "src" / "aurl" / "analysis" / "data" / "melody_model.json"
)


def note_f1(notes, idx, ref: np.ndarray) -> float:
    est_iv = np.stack([notes.onset[idx], notes.onset[idx] + 0.1], axis=1)
    est_p = mir_eval.util.midi_to_hz(notes.pitch[idx].astype(float))
    ref_p = mir_eval.util.midi_to_hz(ref[:, 2])
    if len(idx) == 0:
        return 0.0
    _, _, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref[:, :2], ref_p, est_iv, est_p, onset_tolerance=0.05, offset_ratio=None
    )
    return float(f)


def song(i: int):
    notes = score_notes(pop.merged_score(i))
    ref = pop.melody_track(i)
    keys = {(round(t * 1000), int(p)) for t, _, p in ref}
    y = np.array(
        [(round(t * 1000), int(p)) in keys for t, p in zip(notes.onset, notes.pitch, strict=True)]
    )
    return notes, mel.note_features(notes), y.astype(np.float32), ref


def fit_stage(
    feats: dict[int, np.ndarray], data: dict, train: list[int], hidden: int, epochs: int
) -> mel.Stage:
    """One F-hidden-1 network fitted with Adam on binary cross-entropy over the ``train`` songs."""
    x = np.concatenate([feats[i] for i in train])
    y = np.concatenate([data[i][2] for i in train])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for ep in range(epochs):
        perm = torch.randperm(len(yt))
        total = 0.0
        for k in range(0, len(yt), 4096):
            idx = perm[k : k + 4096]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"  epoch {ep}: loss {total / len(yt):.4f}", flush=True)
    return mel.Stage(
        w1=net[0].weight.detach().double().numpy(),
        b1=net[0].bias.detach().double().numpy(),
        w2=net[2].weight.detach().double().numpy()[0],
        b2=float(net[2].bias.detach()[0]),
        mean=mean.astype(np.float64),
        std=std.astype(np.float64),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--last", type=int, default=700)
    ap.add_argument("--tune-from", type=int, default=601)
    ap.add_argument("--train-last", type=int, default=600)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.last > 700:
        raise SystemExit("--last must stay <= 700: 701-800 are the held-out songs")
    print(f"command: {' '.join(sys.argv)}")
    t0 = time.time()
    data = {i: song(i) for i in range(1, args.last + 1)}
    print(f"features of {len(data)} songs in {time.time() - t0:.0f} s", flush=True)
    train = [i for i in data if i <= args.train_last]
    feats = {i: d[1] for i, d in data.items()}
    stages: list[mel.Stage] = []
    probs: dict[int, np.ndarray] = {}
    for k in range(args.stages):
        if k:  # add the context of the previous stage's probabilities
            feats = {
                i: np.concatenate([f, mel.context_features(data[i][0], probs[i])], axis=1)
                for i, f in feats.items()
            }
        stages.append(
            fit_stage(feats, data, train, hidden=32 if k == 0 else 48, epochs=args.epochs)
        )
        probs = {i: 1.0 / (1.0 + np.exp(-stages[-1].logit(f))) for i, f in feats.items()}
        print(f"stage {k + 1}: {feats[train[0]].shape[1]} features", flush=True)
    best = None
    for thr in (0.3, 0.35, 0.4, 0.45, 0.5, 0.6):
        model = mel.MelodyModel(tuple(stages), thr)
        f = np.mean(
            [
                note_f1(d[0], mel.extract_melody(notes=d[0], model=model), d[3])
                for i, d in data.items()
                if i >= args.tune_from
            ]
        )
        print(f"threshold {thr}: note F1 {f:.4f} on {args.tune_from}-{args.last}", flush=True)
        if best is None or f > best[1]:
            best = (thr, f)
    out = {
        "note": (
            f"Fitted by benchmarks/fit_melody_model.py: {args.stages} stages on POP909 "
            f"001-{args.train_last:03d} (tracks merged), threshold on {args.tune_from}-{args.last} "
            f"(note F1 {best[1]:.4f} there); 701-800 never read."
        ),
        "stages": [
            {
                "w1": np.round(st.w1, 5).tolist(),
                "b1": np.round(st.b1, 5).tolist(),
                "w2": np.round(st.w2, 5).tolist(),
                "b2": round(st.b2, 5),
                "mean": np.round(st.mean, 5).tolist(),
                "std": np.round(st.std, 5).tolist(),
            }
            for st in stages
        ],
        "threshold": best[0],
    }
    args.out.write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
