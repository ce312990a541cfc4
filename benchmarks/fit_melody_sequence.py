"""Fit the melody sequence network shipped as ``src/aurl/analysis/data/melody_sequence.*``.

    .venv/bin/python benchmarks/fit_melody_sequence.py        # ~15-20 minutes on 2 cores

POP909 songs, tracks merged; a note's target is 1 when a MELODY-track note has its pitch and onset
(as ``fit_melody_model.py``). Input per note: ``melody.note_features`` standardised, the log gap to
the previous onset, a new-onset-group flag and the shipped stacked scorer's P(melody)
(``melody_sequence.sequence_inputs``). The network (``MelodyGRU``) is fitted with Adam (one-cycle
learning rate, peak 3e-3) on binary cross-entropy over windows of 384 notes (hop 192) from songs 001-600; the decision threshold is
then chosen by mean note F1 (mir_eval, 50 ms onsets, no offsets) on 601-700, which it was not
fitted on; every ``--eval-every`` epochs the weights with the best F1 there (threshold 0.4) are
kept (early stopping on the tuning songs). Songs 701-800 (held out) are never read.

The shipped file is the final refit on every tuning-range song with the settings that run chose
(12 epochs, threshold 0.35):

    .venv/bin/python benchmarks/fit_melody_sequence.py --train-last 700 --threshold 0.35
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fit_melody_model as fmm

from aurl.analysis import melody as mel
from aurl.analysis.melody_sequence import MelodyGRU, SequenceScorer, sequence_inputs

DATA = Path(__file__).resolve().parents[1] / "src" / "aurl" / "analysis" / "data"
WINDOW, HOP, BATCH = 384, 192, 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--train-last", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--last", type=int, default=700)
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="fixed decision threshold, for a final fit on every song up to --last "
        "(--train-last equal to --last: no tuning songs left, so no early stopping either)",
    )
    ap.add_argument(
        "--skip-train",
        default=None,
        help="A-B: songs left out of training (cross-fitting: a network for songs A-B that never "
        "saw them, as fit_structure_model.py --melody-network uses)",
    )
    ap.add_argument("--out", type=Path, default=DATA / "melody_sequence")
    args = ap.parse_args()
    if args.last > 700:
        raise SystemExit("--last must stay <= 700: 701-800 are the held-out songs")
    if args.train_last >= args.last and args.threshold is None:
        raise SystemExit("no tuning songs left (--train-last >= --last): pass --threshold")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"command: {' '.join(sys.argv)}", flush=True)
    t0 = time.time()
    stacked = mel.default_model()
    songs = {}
    for i in range(1, args.last + 1):
        notes, feats, y, ref = fmm.song(i)
        songs[i] = (notes, feats, y, ref, mel.stage_probabilities(notes, stacked)[-1])
    skip = range(0)
    if args.skip_train:
        lo, hi = (int(v) for v in args.skip_train.split("-"))
        skip = range(lo, hi + 1)
    train = [i for i in songs if i <= args.train_last and i not in skip]
    tune = [i for i in songs if i > args.train_last]
    allf = np.concatenate([songs[i][1] for i in train])
    mean, std = allf.mean(axis=0), allf.std(axis=0) + 1e-6
    x = {
        i: sequence_inputs(f, mel.onset_groups(n), n.onset, p, mean, std)
        for i, (n, f, _, _, p) in songs.items()
    }
    print(f"inputs of {len(songs)} songs in {time.time() - t0:.0f} s", flush=True)
    net = MelodyGRU(x[1].shape[1], args.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    windows = [(i, k) for i in train for k in range(0, len(x[i]), HOP)]
    steps = args.epochs * -(-len(windows) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(0)
    kept = None  # (weights, tuning F1, epoch)
    for ep in range(args.epochs):
        net.train()
        rng.shuffle(windows)
        total = 0.0
        for b in range(0, len(windows), BATCH):
            xs, ys = [], []
            for i, k in windows[b : b + BATCH]:
                xi, yi = x[i][k : k + WINDOW], songs[i][2][k : k + WINDOW]
                xs.append(np.pad(xi, ((0, WINDOW - len(xi)), (0, 0))))
                ys.append(np.pad(yi, (0, WINDOW - len(yi)), constant_values=-1))
            logits = net(torch.from_numpy(np.stack(xs)))
            y = torch.from_numpy(np.stack(ys))
            keep = y >= 0
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], y[keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        print(
            f"epoch {ep}: loss {total / -(-len(windows) // BATCH):.4f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
        if tune and ((ep + 1) % args.eval_every == 0 or ep + 1 == args.epochs):
            f = tune_f1(SequenceScorer(net, mean, std, 0.4), songs, tune)
            print(f"  note F1 {f:.4f} on {tune[0]}-{tune[-1]} (threshold 0.4)", flush=True)
            if kept is None or f > kept[1]:
                kept = ({k: v.detach().clone() for k, v in net.state_dict().items()}, f, ep + 1)
    if kept is not None:
        net.load_state_dict(kept[0])
        print(f"kept the weights after epoch {kept[2]}", flush=True)
    else:
        kept = (None, None, args.epochs)
    best = (args.threshold, None) if args.threshold is not None else None
    for thr in (0.3, 0.35, 0.4, 0.45, 0.5) if best is None else ():
        f = tune_f1(SequenceScorer(net, mean, std, thr), songs, tune)
        print(f"threshold {thr}: note F1 {f:.4f} on {tune[0]}-{tune[-1]}", flush=True)
        if best is None or f > best[1]:
            best = (thr, f)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    args.out.with_suffix(".safetensors").write_bytes(save(weights))
    meta = {
        "note": (
            f"Fitted by benchmarks/fit_melody_sequence.py (weights after epoch {kept[2]} of "
            f"{args.epochs}) on POP909 "
            f"001-{args.train_last:03d}"
            + (f" except {args.skip_train}" if args.skip_train else "")
            + " (tracks merged), "
            + (
                f"threshold on {tune[0]}-{tune[-1]} (note F1 {best[1]:.4f} there)"
                if best[1] is not None
                else f"threshold {best[0]} given (chosen on a fit to fewer songs)"
            )
            + "; 701-800 never read."
        ),
        "hidden": args.hidden,
        "threshold": best[0],
        "mean": np.round(mean, 6).tolist(),
        "std": np.round(std, 6).tolist(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta) + "\n")
    print(f"wrote {args.out}.{{json,safetensors}} in {time.time() - t0:.0f} s: {meta['note']}")


def tune_f1(scorer: SequenceScorer, songs: dict, tune: list[int]) -> float:
    """Mean note F1 of ``extract_melody`` on the tuning songs with the scorer's probabilities."""
    net_mode = scorer.net.training
    f1 = []
    for i in tune:
        notes, feats, _, ref, p = songs[i]
        prob = scorer.probability(notes, feats, mel.onset_groups(notes), p)
        idx = mel.extract_melody(notes=notes, prob=prob, threshold=scorer.threshold)
        f1.append(fmm.note_f1(notes, idx, ref))
    scorer.net.train(net_mode)
    return float(np.mean(f1))


if __name__ == "__main__":
    main()
