"""Picture of an interpolation between two held-out chorales (the README's VAE section).

    python benchmarks/bench_vae_figure.py models/bach_vae data/bach --out docs/img/vae_interpolation.png

Encodes the first ``--bars`` bars of test chorales A and B segment by segment (what
``aurl interpolate A B --bars N`` does), decodes ``--steps`` slerp points greedily and draws each
step as a piano roll. A note is blue when chorale A has it (same onset and pitch), orange when B has
it, purple when both do, grey when neither; each row's title gives its note F1 against A and B.
Also writes the figures as JSON next to the PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch
from scipy.stats import spearmanr

from aurl.config import atomic_write_text


def note_set(score, limit_ticks: int | None = None) -> dict[tuple[int, int], int]:
    """{(onset tick, pitch): duration} of every note (onset < ``limit_ticks`` when given)."""
    out = {}
    for track in score.tracks:
        for n in track.notes:
            if limit_ticks is None or n.time < limit_ticks:
                out[(int(n.time), int(n.pitch))] = int(n.duration)
    return out


def f1(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", type=Path)
    p.add_argument("data", type=Path, help="prepared data (its test split gives A and B)")
    p.add_argument("--pair", type=int, nargs=2, default=[0, 1], help="test piece indices A B")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("docs/img/vae_interpolation.png"))
    args = p.parse_args()
    torch.set_num_threads(1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aurl.bundle import load_bundle
    from aurl.data.dataset import PreparedData
    from aurl.generation.latent import decode_rows, encode_segments, interpolate_segments
    from aurl.training.vae_module import _split_pieces

    bundle = load_bundle(args.model)
    model, tok = bundle.model, bundle.tokenizer
    v = model.cfg.vae
    test = _split_pieces(PreparedData(args.data), "test")
    a, b = (test[i] for i in args.pair)
    n = -(-args.bars // v.bars_per_segment)
    za, zb = encode_segments(model, tok, a, n), encode_segments(model, tok, b, n)
    path = interpolate_segments(model, za, zb, args.steps)
    parts = decode_rows(bundle, path, 0.0, 1.0, seed=0)
    n = len(parts) // args.steps
    rows = [[t for part in parts[s * n : (s + 1) * n] for t in part] for s in range(args.steps)]

    def decode(ids):
        body = [int(i) for i in ids if i not in (tok.bos_id, tok.eos_id, tok.pad_id)]
        return tok.decode([tok.bos_id, *body, tok.eos_id])

    ref_a, ref_b = decode(a), decode(b)
    tpq = ref_a.ticks_per_quarter
    limit = n * v.bars_per_segment * v.beats_per_bar * tpq
    notes_a, notes_b = note_set(ref_a, limit), note_set(ref_b, limit)
    steps = []
    height = 1.1 * args.steps + 1.2
    fig, axes = plt.subplots(args.steps, 1, figsize=(10, height), sharex=True)
    colors = {(1, 0): "#1f77b4", (0, 1): "#ff7f0e", (1, 1): "#9467bd", (0, 0): "#9a9a9a"}
    pitches = [p for _, p in notes_a] + [p for _, p in notes_b]
    lo, hi = min(pitches) - 2, max(pitches) + 2
    for s, (ax, row) in enumerate(zip(axes, rows, strict=True)):
        score = decode(row)
        got = note_set(score)
        fa, fb = f1(set(notes_a), set(got)), f1(set(notes_b), set(got))
        steps.append({"step": s, "notes": len(got), "note_f1_vs_a": fa, "note_f1_vs_b": fb})
        for (onset, pitch), dur in got.items():
            key = (int((onset, pitch) in notes_a), int((onset, pitch) in notes_b))
            ax.broken_barh(
                [(onset / tpq, max(dur, 1) / tpq)], (pitch - 0.4, 0.8), color=colors[key]
            )
        ax.set_ylim(lo, hi)
        ax.set_ylabel(f"step {s}", rotation=0, ha="right", va="center", fontsize=9)
        ax.set_yticks([])
        ax.set_title(f"note F1 vs A {fa:.2f}   vs B {fb:.2f}", fontsize=8, loc="right", pad=2)
        for bar in range(0, n * v.bars_per_segment + 1):
            ax.axvline(bar * v.beats_per_bar, color="#dddddd", lw=0.6, zorder=0)
    axes[-1].set_xlabel("beats")
    handles = [
        matplotlib.patches.Patch(color=c, label=lab)
        for c, lab in zip(
            colors.values(), ["in A", "in B", "in A and B", "in neither"], strict=True
        )
    ]
    fig.suptitle(
        f"{args.model}: test chorale {args.pair[0]} (A) -> {args.pair[1]} (B), "
        f"{args.steps} steps, first {n * v.bars_per_segment} bars, greedy",
        fontsize=10, y=1 - 0.12 / height, va="top",
    )  # fmt: skip
    fig.legend(
        handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.42 / height),
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.62 / height))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    blob = {
        "command": f"python {shlex.join(sys.argv)}",
        "model": str(args.model),
        "pair": args.pair,
        "bars": n * v.bars_per_segment,
        "steps": steps,
        "loadavg": os.getloadavg(),
        "spearman_vs_a": float(spearmanr(range(len(steps)), [x["note_f1_vs_a"] for x in steps])[0]),
        "spearman_vs_b": float(spearmanr(range(len(steps)), [x["note_f1_vs_b"] for x in steps])[0]),
    }
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(blob, indent=2) + "\n")
    print(json.dumps(blob, indent=2))


if __name__ == "__main__":
    main()
