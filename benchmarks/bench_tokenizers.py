"""The tokenizer decision's second half: samples of each tokenizer's model through the suite.

    python benchmarks/bench_train.py --part tokenizers --minutes 15 --threads 1 --save-dir runs/tok15 \\
        data/tok/midilike data/tok/remi data/tok/tsd
    python benchmarks/bench_tokenizers.py runs/tok15/*_seed0 --num 100 --bars 16 --seed 11

For each model bundle (one per tokenizer, trained the same wall time by ``bench_train.py --part
tokenizers``), ``aurl generate``'s pipeline writes ``--num`` pieces of ``--bars`` bars (MIDI only,
the corpus's generation defaults stored in the bundle) and ``aurl evaluate --samples`` compares them
with the test split of ``--reference``. Test bits per note come from ``benchmarks/results/train.json``
(``tokenizers``) when that holds the same model label. Results: ``benchmarks/results/tokenizers.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from aurl.atomic import atomic_write_text

log = logging.getLogger("bench_tokenizers")
RESULTS = Path(__file__).resolve().parent / "results"
SHOWN = ("polyphony", "scale_consistency", "pitch_class_histogram", "longest_note", "ioi_histogram")


def bits_per_note(train_json: Path) -> dict[str, dict]:
    """Training rows of ``bench_train.py --part tokenizers`` by model label."""
    if not train_json.is_file():
        return {}
    rows = json.loads(train_json.read_text()).get("tokenizers", {}).get("rows", [])
    return {f"{r['model']}_seed{r.get('seed', 0)}": r for r in rows}


def measure(bundle_dir: Path, args: argparse.Namespace, trained: dict[str, dict]) -> dict:
    from aurl.bundle import load_bundle
    from aurl.evaluation.samples import evaluate_samples
    from aurl.generation.pipeline import generate

    bundle = load_bundle(bundle_dir)
    out = args.samples_dir / bundle_dir.name
    t = time.perf_counter()
    summary = generate(
        bundle, out=out, num=args.num, bars=args.bars, seed=args.seed,
        batch_size=args.batch_size, wav=False, musicxml=False, png=False,
    )  # fmt: skip
    gen_s = time.perf_counter() - t
    result = evaluate_samples(out, args.reference, split="test", cache=True)
    feats = result["features"]
    row = {
        "model": bundle_dir.name,
        "tokenizer": bundle.tokenizer.cfg.kind,
        "bpe": bool(bundle.tokenizer.is_trained),
        "steps": trained.get(bundle_dir.name, {}).get("steps", "-"),
        "test_bits_per_note": trained.get(bundle_dir.name, {}).get("test_bits_per_note", "-"),
        "pieces": len(summary.pieces),
        "notes_per_piece": round(
            sum(p.notes for p in summary.pieces) / max(1, len(summary.pieces)), 1
        ),
        "generate_s": round(gen_s, 1),
        "mean_overlap": round(result["mean_overlap_area"], 3),
        "frechet": round(result["frechet_distance"], 1),
        **{f"{name}_overlap": round(feats[name]["overlap_area"], 3) for name in SHOWN},
    }
    log.info("%s", row)
    return row


def to_markdown(res: dict) -> str:
    rows = res["rows"]
    keys = list(rows[0])
    out = ["# Tokenizers: bits per note and 100 samples through the suite", "",
           f"`{res['command']}` — {res['when']}", ""]  # fmt: skip
    out += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="model bundles (bench_train --save-dir)")
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--bars", type=int, default=16)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--reference", type=Path, default=Path("data/bach"))
    p.add_argument("--samples-dir", type=Path, default=Path("out/tokenizers"))
    p.add_argument("--train-json", type=Path, default=RESULTS / "train.json")
    p.add_argument("--out", type=Path, default=RESULTS / "tokenizers.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    trained = bits_per_note(args.train_json)
    rows = [measure(b, args, trained) for b in args.bundles]
    res = {
        "command": "python benchmarks/bench_tokenizers.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        + f"{os.getloadavg()[0]:.1f} at the end",
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(res, indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
