"""Fit the chord model shipped in ``src/aurl/analysis/data/chord_model.json`` on POP909 001-700.

    .venv/bin/python benchmarks/fit_chord_model.py            # ~2-3 minutes on 2 cores

Songs are merged into one track and the beats are INFERRED (``track_beats``), as at analysis time.
Each beat's target is the annotated chord (``chord_midi.txt``) at the beat's midpoint, mapped to
the nearest vocabulary chord. The scorer is a rotation-equivariant softmax regression
(``chords.state_scores``) fitted with Adam; the transition table counts the annotated beat-level
sequences (changes by bar position; moves by quality pair and root interval, add-0.5 smoothing).
The emission scale is then picked by beat accuracy of the smoothed path on 601-700. Songs 701-800
are never read here: they are the held-out set of ``bench_analysis.py``.
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

from aurl.analysis import chords as ch
from aurl.analysis.beats import track_beats
from aurl.analysis.notes import score_notes

OUT = (
    Path(__file__).resolve().parents[1] / "src" / "aurl" / "analysis" / "data" / "chord_model.json"
)


def song_features(i: int):
    score = pop.merged_score(i)
    notes = score_notes(score)
    bt = track_beats(score, notes)
    bounds = ch.segment_bounds(bt.beats, notes.end)
    feats, extra = ch.beat_features(notes, bounds)
    pos = ch.bar_positions(bounds[:-1], bt.downbeats)
    iv, lab = pop.chords(i)
    mid = (bounds[:-1] + bounds[1:]) / 2
    j = np.searchsorted(iv[:, 0], mid, side="right") - 1
    inside = (j >= 0) & (mid < iv[np.maximum(j, 0), 1])
    states = {lb: ch.label_state(lb) for lb in set(lab)}
    target = np.array(
        [states[lab[k]] if ok else ch.N_STATES - 1 for k, ok in zip(j, inside, strict=True)]
    )
    return feats, extra, pos, target


def fit_scorer(feats, extra, target, epochs: int = 12, hidden: int = 48, seed: int = 0):
    torch.manual_seed(seed)
    Q = ch.Q
    layer1 = torch.nn.Linear(108, hidden)
    layer2 = torch.nn.Linear(hidden, Q)
    w_n = torch.zeros(4, requires_grad=True)
    params = [*layer1.parameters(), *layer2.parameters(), w_n]
    opt = torch.optim.Adam(params, lr=0.01)
    rot = torch.tensor(ch.rotated(feats), dtype=torch.float32)  # (S, 12, 108)
    ex = torch.tensor(extra, dtype=torch.float32)
    y = torch.tensor(target)
    n = len(y)
    for ep in range(epochs):
        perm = torch.randperm(n)
        total = 0.0
        for k in range(0, n, 2048):
            idx = perm[k : k + 2048]
            chord = layer2(torch.relu(layer1(rot[idx]))).reshape(len(idx), 12 * Q)
            nn_ = w_n[0] + ex[idx] @ w_n[1:]
            logits = torch.cat([chord, nn_[:, None]], dim=1)
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"epoch {ep}: loss {total / n:.4f}", flush=True)

    def arr(t):
        return t.detach().numpy().astype(np.float64)

    return (arr(layer1.weight), arr(layer1.bias), arr(layer2.weight), arr(layer2.bias)), arr(w_n)


def fit_transitions(seqs, positions):
    Q = ch.Q
    change = np.full(4, 0.5)
    stay = np.full(4, 0.5)
    move = np.full((Q + 1, Q + 1, 12), 0.5)
    for seq, pos in zip(seqs, positions, strict=True):
        for t in range(1, len(seq)):
            a, c = int(seq[t - 1]), int(seq[t])
            if a == c:
                stay[pos[t]] += 1
                continue
            change[pos[t]] += 1
            qa = Q if a == ch.N_STATES - 1 else a % Q
            qc = Q if c == ch.N_STATES - 1 else c % Q
            ra = 0 if a == ch.N_STATES - 1 else a // Q
            rc = 0 if c == ch.N_STATES - 1 else c // Q
            move[qa, qc, (rc - ra) % 12] += 1
    # Moves into or out of N carry no root interval: spread them evenly over the 12.
    move[Q, :, :] = move[Q, :, :].sum(axis=1, keepdims=True) / 12
    move[:, Q, :] = move[:, Q, :].sum(axis=1, keepdims=True) / 12
    log_move = np.log(move / move.sum(axis=(1, 2), keepdims=True))
    return np.log(change / (change + stay)), log_move


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--last", type=int, default=700)
    ap.add_argument("--tune-from", type=int, default=601)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.last > 700:
        raise SystemExit("--last must stay <= 700: 701-800 are the held-out songs")
    print(f"command: {' '.join(sys.argv)}")
    t0 = time.time()
    data = {}
    for i in range(args.first, args.last + 1):
        data[i] = song_features(i)
    print(f"features of {len(data)} songs in {time.time() - t0:.0f} s", flush=True)
    feats = np.concatenate([d[0] for d in data.values()])
    extra = np.concatenate([d[1] for d in data.values()])
    target = np.concatenate([d[3] for d in data.values()])
    (w1, b1, w2, b2), w_n = fit_scorer(feats, extra, target)
    log_change, log_move = fit_transitions(
        [d[3] for d in data.values()], [d[2] for d in data.values()]
    )
    best = None
    for scale in (0.7, 1.0, 1.5, 2.0, 3.0, 4.0):
        model = ch.ChordModel(w1, b1, w2, b2, w_n, log_change, log_move, scale)
        move, _ = ch.transition_tensor(model)
        hit = tot = 0
        for i in range(args.tune_from, args.last + 1):
            f, e, pos, y = data[i]
            path = ch.viterbi(scale * ch.state_scores(model, f, e), move, log_change, pos)
            hit += int((path == y).sum())
            tot += len(y)
        print(
            f"emission scale {scale}: beat accuracy {hit / tot:.4f} on {args.tune_from}-{args.last}"
        )
        if best is None or hit / tot > best[1]:
            best = (scale, hit / tot)
    out = {
        "note": (
            f"Fitted by benchmarks/fit_chord_model.py on POP909 songs {args.first:03d}-{args.last:03d} "
            "(tracks merged, inferred beats); 701-800 never read. Beat accuracy on the tuning songs "
            f"{args.tune_from}-{args.last}: {best[1]:.4f}."
        ),
        "qualities": list(ch.QUALITIES),
        "w1": np.round(w1, 4).tolist(),
        "b1": np.round(b1, 4).tolist(),
        "w2": np.round(w2, 4).tolist(),
        "b2": np.round(b2, 4).tolist(),
        "w_n": np.round(w_n, 5).tolist(),
        "log_change": np.round(log_change, 5).tolist(),
        "log_move": np.round(log_move, 4).tolist(),
        "emission_scale": best[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out) + "\n")
    print(
        f"wrote {args.out} (scale {best[0]}, tuning beat accuracy {best[1]:.4f}) in {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
