"""Fit the melody note scorer shipped in ``src/aurl/analysis/data/melody_model.json``.

    .venv/bin/python benchmarks/fit_melody_model.py          # ~2-4 minutes on 2 cores

POP909 songs 001-700, tracks merged (so the network sees only the music): a note's target is 1
when a MELODY-track note has the same pitch and onset (within 1 ms). Features are
``melody.note_features``; a 14-32-1 network is fitted with Adam on binary cross-entropy; the
threshold is then chosen by mean note F1 (mir_eval, 50 ms onsets, no offsets) on songs 601-700.
Songs 701-800 (held out) are never read.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--last", type=int, default=700)
    ap.add_argument("--tune-from", type=int, default=601)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.last > 700:
        raise SystemExit("--last must stay <= 700: 701-800 are the held-out songs")
    print(f"command: {' '.join(sys.argv)}")
    t0 = time.time()
    data = {i: song(i) for i in range(1, args.last + 1)}
    print(f"features of {len(data)} songs in {time.time() - t0:.0f} s", flush=True)
    x = np.concatenate([d[1] for d in data.values()])
    y = np.concatenate([d[2] for d in data.values()])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(mel.N_FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for ep in range(args.epochs):
        perm = torch.randperm(len(yt))
        total = 0.0
        for k in range(0, len(yt), 4096):
            idx = perm[k : k + 4096]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"epoch {ep}: loss {total / len(yt):.4f}", flush=True)
    w1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    w2, b2 = net[2].weight.detach().double().numpy()[0], float(net[2].bias.detach()[0])
    best = None
    for thr in (0.2, 0.3, 0.4, 0.5, 0.6):
        model = mel.MelodyModel(w1, b1, w2, b2, mean, std, thr)
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
            f"Fitted by benchmarks/fit_melody_model.py on POP909 001-{args.last:03d} (tracks merged); "
            f"701-800 never read. Note F1 on {args.tune_from}-{args.last}: {best[1]:.4f}."
        ),
        "w1": np.round(w1, 5).tolist(),
        "b1": np.round(b1, 5).tolist(),
        "w2": np.round(w2, 5).tolist(),
        "b2": round(b2, 5),
        "mean": np.round(mean, 5).tolist(),
        "std": np.round(std, 5).tolist(),
        "threshold": best[0],
    }
    args.out.write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
