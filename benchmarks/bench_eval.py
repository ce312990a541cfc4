"""Evaluation suite (issue 10): does it separate real from random, how fast is it, what does the
shipped model score?

    .venv/bin/python benchmarks/bench_eval.py [--data data/bach] [--model-samples out/eval_before]

1. real vs real: the Bach test split (as samples) against the train split;
2. 100 seeded random-note pieces against the test split (and against train);
3. the shipped model's samples (``aurl generate --num 100 --bars 16 --seed 11 --no-wav --out
   out/eval_before``) against the test split, with the report page;
4. speed: 100 pieces against a 400-piece reference (train + val + test, first 400), cold (features
   computed, no cache) and warm (reference features cached), wall and CPU seconds, load average;
5. any corpus: every file of ``../shared/datasets/real_midi`` (multi-track, drums, tempo changes).

Writes benchmarks/results/eval_suite.json and .md (and eval_before_report.png).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def table_md(title: str, result: dict) -> str:
    lines = [
        f"### {title}",
        "",
        f"{result['num_samples']} samples vs {result['num_reference']} reference pieces: "
        f"**mean overlap area {result['mean_overlap_area']:.3f}**, mean KL "
        f"{result['mean_kl']:.3f}, Fréchet distance {result['frechet_distance']:.2f}",
        "",
        "| feature | unit | overlap | KL | samples mean | reference mean |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, f in result["features"].items():
        s, r = f["samples_mean"], f["reference_mean"]
        sm = "(histogram)" if isinstance(s, list) else f"{s:.3f}"
        rm = "(histogram)" if isinstance(r, list) else f"{r:.3f}"
        lines.append(
            f"| {name} | {f['unit']} | {f['overlap_area']:.3f} | {f['kl']:.2f} | {sm} | {rm} |"
        )
    return "\n".join(lines) + "\n"


def combined_md(runs: dict, specs: dict) -> str:
    """One table: overlap area per feature for every comparison, with the means that explain it."""
    keys = [k for k in ("real_test_vs_train", "random_vs_test", "model_vs_test") if k in runs]
    head = {"real_test_vs_train": "Bach test vs train", "random_vs_test": "random vs test",
            "model_vs_test": "model vs test"}  # fmt: skip
    lines = [
        "### Overlap area per feature (1 = as close as the corpus's own pieces; 0 = nothing shared)",
        "",
        "| feature | unit (time base) | "
        + " | ".join(head[k] for k in keys)
        + " | Bach test mean | random mean | model mean |",
        "| --- | --- | " + " | ".join("---:" for _ in keys) + " | ---: | ---: | ---: |",
    ]

    def mean(key: str, name: str, which: str) -> str:
        if key not in runs:
            return "-"
        v = runs[key]["features"][name][which]
        return "(hist.)" if isinstance(v, list) else f"{v:.3g}"

    for name, spec in specs.items():
        cells = [f"{runs[k]['features'][name]['overlap_area']:.3f}" for k in keys]
        lines.append(
            f"| {name} | {spec.unit} ({spec.time_base}) | "
            + " | ".join(cells)
            + f" | {mean('random_vs_test', name, 'reference_mean')}"
            + f" | {mean('random_vs_test', name, 'samples_mean')}"
            + f" | {mean('model_vs_test', name, 'samples_mean')} |"
        )
    lines.append(
        "| **mean overlap area** | | "
        + " | ".join(f"**{runs[k]['mean_overlap_area']:.3f}**" for k in keys)
        + " | | | |"
    )
    lines.append(
        "| **Fréchet distance** | | "
        + " | ".join(f"{runs[k]['frechet_distance']:.1f}" for k in keys)
        + " | | | |"
    )
    return "\n".join(lines) + "\n"


def callback_figures(args, md: list[str]) -> dict:
    """One validation's worth of the SampleQuality callback on the shipped model (val split)."""
    from types import SimpleNamespace

    from aurl.bundle import load_bundle
    from aurl.training.callbacks import SampleQuality

    bundle = load_bundle(REPO / "models" / "bach_small")
    logged: dict = {}
    module = SimpleNamespace(
        model=bundle.model, max_seq_len=bundle.config.model.max_seq_len,
        log=lambda name, value, **kw: logged.__setitem__(name, value),
    )  # fmt: skip
    cb = SampleQuality(args.data, bundle.tokenizer, args.callback_samples, args.callback_tokens, 0)
    load0 = os.getloadavg()
    trainer = SimpleNamespace(sanity_checking=False, global_step=0)
    _, wall, cpu = timed(lambda: cb.on_validation_epoch_end(trainer, module))
    fig = {"samples": args.callback_samples, "tokens": args.callback_tokens, "wall_s": wall,
           "cpu_s": cpu, "logged": logged, "loadavg": [load0, os.getloadavg()]}  # fmt: skip
    md.append(
        f"### Validation callback: shipped model, trainer.eval_samples={args.callback_samples}, "
        f"sample_tokens={args.callback_tokens}, against the val split\n\n"
        f"logged {', '.join(f'{k} = {v:.3f}' for k, v in logged.items())}; one validation took "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU (load average {load0[0]:.1f}).\n"
    )
    return fig


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("skipped",)} | {
        "skipped": result.get("skipped", [])
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO / "data" / "bach")
    ap.add_argument("--model-samples", type=Path, default=REPO / "out" / "eval_before")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--random", type=int, default=100, help="random-note pieces")
    ap.add_argument(
        "--callback-samples",
        type=int,
        default=0,
        help="also time the SampleQuality callback with N samples of the shipped model",
    )
    ap.add_argument("--callback-tokens", type=int, default=512)
    args = ap.parse_args()
    print("command:", " ".join([".venv/bin/python", *sys.argv]), flush=True)

    import symusic

    from aurl.evaluation import samples as S
    from aurl.evaluation.features import piece_from_score

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    os.environ["AURL_CACHE"] = str(tmp / "cache")  # cold start: no cached reference features
    specs = S.registered_features()
    names = list(specs)
    out: dict = {"features": names, "loadavg_start": os.getloadavg()}
    md = ["# Evaluation suite (issue 10)", "", f"command: `{' '.join(sys.argv)}`", ""]

    # 1-2: real vs real, random vs real
    test, _ = S.reference_table(args.data, "test", names)
    train, kind = S.reference_table(args.data, "train", names)
    rand_pieces = [
        piece_from_score(S.random_note_score(s), f"random_{s}") for s in range(args.random)
    ]
    rand = S.feature_table(rand_pieces, names)
    runs = {
        "real_test_vs_train": S.compare_tables(test, train, specs),
        "random_vs_test": S.compare_tables(rand, test, specs),
        "random_vs_train": S.compare_tables(rand, train, specs),
    }
    for key, r in runs.items():
        r.update({"num_samples": len(test if key.startswith("real") else rand),
                  "num_reference": len(train if key.endswith("train") else test)})  # fmt: skip
    md.append(f"Reference pieces: {kind} files of `{args.data}` (split by the manifest).\n")
    md.append(table_md("Real vs real: Bach test split (20) vs train split (375)",
                       runs["real_test_vs_train"]))  # fmt: skip
    md.append(
        table_md(f"{args.random} random-note pieces vs the test split", runs["random_vs_test"])
    )
    md.append(table_md(f"{args.random} random-note pieces vs the train split",
                       runs["random_vs_train"]))  # fmt: skip

    # 3: the shipped model's samples
    if args.model_samples.is_dir() and any(args.model_samples.glob("*.mid")):
        model = S.evaluate_samples(
            args.model_samples, args.data, split="test", json_path=args.out / "eval_before.json",
            report_dir=tmp / "report",
        )  # fmt: skip
        png = args.out / "eval_before_report.png"
        shutil.copy(tmp / "report" / "report.png", png)
        runs["model_vs_test"] = model
        md.append(table_md(f"Shipped model ({args.model_samples}) vs the test split", model))
        md.append(f"Report picture: `{png.relative_to(REPO)}` ({png.stat().st_size // 1024} KB); "
                  f"skipped files: {len(model['skipped'])}\n")  # fmt: skip
    else:
        md.append(f"Shipped model: {args.model_samples} has no MIDI files; not measured.\n")

    # 4: speed, 100 pieces vs a 400-piece reference
    manifest, pieces_json = S._read_prepared(args.data)
    root = Path(manifest["root"])
    ref_paths = [root / n for split in ("train", "val", "test") for n in pieces_json[split]][:400]
    samples_dir = tmp / "samples100"
    samples_dir.mkdir()
    for i, p in enumerate(rand_pieces[:100]):
        S.random_note_score(i).dump_midi(str(samples_dir / f"{p.name}.mid"))
    load0 = os.getloadavg()

    def cold():
        ref = S.feature_table([piece_from_score(symusic.Score(str(p)), p.name) for p in ref_paths],
                              names)  # fmt: skip
        pieces, _ = S.load_folder(samples_dir)
        return ref, S.compare_tables(S.feature_table(pieces, names), ref, specs)

    (ref400, _), cold_wall, cold_cpu = timed(cold)

    def warm():
        pieces, _ = S.load_folder(samples_dir)
        return S.compare_tables(S.feature_table(pieces, names), ref400, specs)

    _, warm_wall, warm_cpu = timed(warm)
    # the runner end to end against the 375-piece train split, without and with the cache
    _, cli_cold_wall, cli_cold_cpu = timed(
        lambda: S.evaluate_samples(samples_dir, args.data, split="train", cache=False)
    )
    S.evaluate_samples(samples_dir, args.data, split="train")  # fills the cache
    _, cli_warm_wall, cli_warm_cpu = timed(
        lambda: S.evaluate_samples(samples_dir, args.data, split="train")
    )
    speed = {
        "samples": 100, "reference": len(ref400),
        "cold_wall_s": cold_wall, "cold_cpu_s": cold_cpu,
        "warm_wall_s": warm_wall, "warm_cpu_s": warm_cpu,
        "runner_train_split_no_cache_wall_s": cli_cold_wall,
        "runner_train_split_no_cache_cpu_s": cli_cold_cpu,
        "runner_train_split_cached_wall_s": cli_warm_wall,
        "runner_train_split_cached_cpu_s": cli_warm_cpu,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
    }  # fmt: skip
    out["speed"] = speed
    md.append("### Speed: 100 pieces vs a 400-piece reference (target ≤ 30 s on 2 cores)\n")
    md.append("| what | wall s | CPU s |\n| --- | ---: | ---: |")
    md.append(f"| cold: features of 400 reference + 100 samples, compare | {cold_wall:.1f} | "
              f"{cold_cpu:.1f} |")  # fmt: skip
    md.append(f"| warm: reference features cached; 100 samples + compare | {warm_wall:.1f} | "
              f"{warm_cpu:.1f} |")  # fmt: skip
    md.append(
        f"| runner vs train split (375), no cache | {cli_cold_wall:.1f} | {cli_cold_cpu:.1f} |"
    )
    md.append(f"| runner vs train split (375), cached | {cli_warm_wall:.1f} | {cli_warm_cpu:.1f} |")
    md.append(f"\nload average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f} "
              f"({os.cpu_count()} CPUs, shared).\n")  # fmt: skip

    # 5: any corpus
    real_midi = REPO / ".." / "shared" / "datasets" / "real_midi"
    if real_midi.is_dir():
        pieces, skipped = S.load_folder(real_midi)
        table = S.feature_table(pieces, names)
        nan = {n: int(np.isnan(v.reshape(len(table), -1)).any(axis=1).sum())
               for n, v in table.values.items()}  # fmt: skip
        out["real_midi"] = {"pieces": len(pieces), "skipped": skipped, "nan_counts": nan}
        md.append(f"### Any corpus: `../shared/datasets/real_midi`\n\n{len(pieces)} files measured, "
                  f"{len(skipped)} skipped ({'; '.join(Path(s['path']).name + ': ' + s['reason'] for s in skipped)}); "
                  f"pieces with an undefined (NaN) feature: "
                  f"{ {k: v for k, v in nan.items() if v} or 'none'}.\n")  # fmt: skip

    md.insert(5, combined_md(runs, specs))
    # 6: the validation callback on the shipped model (trainer.eval_samples=N)
    if args.callback_samples:
        out["callback"] = callback_figures(args, md)

    out["runs"] = {k: strip(v) for k, v in runs.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_suite.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "eval_suite.md").write_text("\n".join(md))
    print("\n".join(md))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
