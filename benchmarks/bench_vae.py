"""VAE vs VAE-GAN at equal wall time on the Bach test split.

    python benchmarks/bench_vae.py data/bach --minutes 3
    python benchmarks/bench_vae.py data/bach --minutes 0.3 --tiny      # smoke test
    python benchmarks/bench_vae.py data/bach --skip-train               # re-measure runs/bench_vae
    python benchmarks/bench_vae.py data/bach --config configs/bach_vae_conductor.yaml --modes vae \
        --work runs/bench_vae_conductor --out benchmarks/results/vae_conductor.json   # issue 13
    python benchmarks/bench_vae.py data/bach --run runs/vae_conductor_long \
        --out benchmarks/results/vae_conductor.json      # measure a run trained with `aurl train`

Trains ``configs/bach_vae.yaml`` twice (model.mode=vae, then vae_gan; same seed, same minutes),
then measures on the test split: reconstruction accuracy (teacher-forced and greedy from the
posterior mean), reconstruction bits per note, KL per latent group, active units; a slerp
interpolation between the first segments of two held-out chorales (every middle step decodable,
pitches within the test set's range, note F1 of each step against each end's segment); and 100 prior samples against the test segments
(pitch-class histogram distance, mean polyphony, note density).

Issue 13's latent-space checks (``latent_checks``): 8-step interpolations between the first
segments of ``--pairs`` pairs of test chorales (Spearman correlation of note F1 vs A and vs B with
the step index, averaged over pairs; every step decoded through the grammar and checked as music)
and ``vary`` at amounts 0.1/0.3/0.6/1.0 (mean note F1 of the variations to their source; identical
variations counted). The greedy reconstruction covers every test segment (``--greedy-segments``),
and the ``--samples`` prior pieces (``--sample-bars`` bars each, what ``aurl sample`` writes) go as
MIDI through the evaluation suite against the test split (``aurl evaluate --samples``). The load
average is recorded beside every timing: the CPU cores are shared.
Writes ``benchmarks/results/vae.json`` and ``vae.md``; the GAN's loss curves go to
``benchmarks/results/vae_gan_losses.png`` (with ``--out X.json``: ``X_losses.png``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from aurl.config import atomic_write_text, load_config
from aurl.generation.latent import first_segment
from aurl.training.vae_metrics import note_f1

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TINY = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.d_ff=128",
    "model.vae.encoder_layers=1", "optim.batch_size=4", "trainer.val_batches=2", "model.vae.gan_warmup_steps=5",
]  # fmt: skip
log = logging.getLogger("bench_vae")


# ---------------------------------------------------------------------------------------------
# musical statistics of token sequences (pure)


def score_stats(tok, rows: list[list[int]]) -> dict:
    """Pitch-class histogram (12, normalized), mean polyphony and notes per beat over ``rows``."""
    pcs = np.zeros(12)
    sounding = total = notes = beats = 0.0
    pitches: list[int] = []
    for ids in rows:
        try:
            score = tok.decode([tok.bos_id, *ids, tok.eos_id])
        except Exception as exc:
            log.debug("undecodable row: %s", exc)
            continue
        tpq = score.ticks_per_quarter
        events = []
        for track in score.tracks:
            for n in track.notes:
                pcs[n.pitch % 12] += 1
                pitches.append(int(n.pitch))
                events += [(n.time, 1), (n.time + max(1, n.duration), -1)]
        notes += sum(len(t.notes) for t in score.tracks)
        beats += max(score.end(), 1) / tpq
        # polyphony: time-weighted number of sounding notes over the time at least one sounds
        events.sort()
        level, last = 0, None
        for t, d in events:
            if last is not None and level > 0:
                sounding += level * (t - last)
                total += t - last
            level, last = level + d, t
    return {
        "pc_hist": (pcs / max(pcs.sum(), 1)).tolist(),
        "mean_polyphony": sounding / max(total, 1),
        "notes_per_beat": notes / max(beats, 1e-9),
        "pitch_min": min(pitches) if pitches else None,
        "pitch_max": max(pitches) if pitches else None,
        "notes": int(notes),
    }


def interp_step(
    tok, ref: dict, step: int, row: list[int], ends: tuple[list[int], list[int]]
) -> dict:
    """One interpolation step checked as music: decodes to notes, pitches within the test range,
    and how much of each end's segment it reproduces (note F1 vs A and vs B: a latent space that
    carries the music goes from high-vs-A to high-vs-B; a collapsed one stays flat)."""
    st = score_stats(tok, [row])
    in_range = (
        st["pitch_min"] is not None
        and ref["pitch_min"] <= st["pitch_min"]
        and st["pitch_max"] <= ref["pitch_max"]
    )
    return {
        "step": step,
        "tokens": len(row),
        "notes": st["notes"],
        "decodable": st["notes"] > 0,
        "pitches_in_test_range": bool(in_range),
        "note_f1_vs_a": round(note_f1(tok, ends[0], row), 3),
        "note_f1_vs_b": round(note_f1(tok, ends[1], row), 3),
    }


def _spearman(values: list[float]) -> float:
    """Spearman correlation of ``values`` with their index; 0 when ``values`` are all equal."""
    if len(set(values)) < 2:
        return 0.0
    return float(spearmanr(np.arange(len(values)), values).statistic)


def latent_checks(
    bundle, test: list[np.ndarray], ref: dict, pairs: int, steps: int, amounts: list[float]
) -> dict:
    """Interpolation monotonicity over ``pairs`` test pairs and ``vary`` distance by amount."""
    from aurl.generation.latent import decode_rows, encode_ids, variation_rows

    model, tok = bundle.model, bundle.tokenizer
    t0 = time.perf_counter()
    per_pair = []
    for i in range(min(pairs, len(test) - 1)):
        a, b = test[i], test[i + 1]
        za, zb = encode_ids(model, tok, a), encode_ids(model, tok, b)
        rows = decode_rows(bundle, model.interpolate(za, zb, steps), 0.0, 1.0, seed=0)
        ends = tuple(first_segment(model, tok, x)[0].tolist() for x in (a, b))
        checked = [interp_step(tok, ref, k, row, ends) for k, row in enumerate(rows)]
        per_pair.append({
            "pair": [i, i + 1],
            "f1_vs_a": [c["note_f1_vs_a"] for c in checked],
            "f1_vs_b": [c["note_f1_vs_b"] for c in checked],
            "spearman_a": _spearman([c["note_f1_vs_a"] for c in checked]),
            "spearman_b": _spearman([c["note_f1_vs_b"] for c in checked]),
            "all_valid": all(c["decodable"] for c in checked),
            "all_in_range": all(c["pitches_in_test_range"] for c in checked),
        })  # fmt: skip
    interp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vary = []
    sources = test[: max(1, min(5, len(test)))]
    for amount in amounts:
        f1s, identical, draws = [], 0, 0
        for j, piece in enumerate(sources):
            z = encode_ids(model, tok, piece)
            rows, n = variation_rows(bundle, z, amount, 4, seed=j)  # what `aurl vary` writes
            draws += n
            src = first_segment(model, tok, piece)[0].tolist()
            f1s += [note_f1(tok, src, r) for r in rows]
            identical += len(rows) - len({tuple(r) for r in rows})
        vary.append({
            "amount": amount, "mean_f1_to_source": float(np.mean(f1s)), "identical": identical,
            "latent_draws": draws, "variations": len(f1s),
        })  # fmt: skip
    means = [v["mean_f1_to_source"] for v in vary]
    return {
        "interpolation_pairs": per_pair,
        "interp_steps": steps,
        "spearman_a_mean": float(np.mean([p["spearman_a"] for p in per_pair])),
        "spearman_b_mean": float(np.mean([p["spearman_b"] for p in per_pair])),
        "interp_all_valid": all(p["all_valid"] for p in per_pair),
        "interp_wall_s": round(interp_s, 1),
        "vary": vary,
        "vary_sources": len(sources),
        "vary_monotonic": all(x > y for x, y in itertools.pairwise(means)),
        "vary_identical_total": sum(v["identical"] for v in vary),
        "vary_wall_s": round(time.perf_counter() - t0, 1),
        "loadavg_after": os.getloadavg(),
    }


def run_progress(run_dir: Path) -> tuple[int, float]:
    """(optimizer steps, training seconds) of a run: from its summary.txt when it finished, else
    from checkpoints/last.ckpt (global step and Lightning's Timer state; a run stopped early)."""
    summary = run_dir / "summary.txt"
    if summary.is_file():
        lines = summary.read_text().splitlines()
        steps = int(next(x for x in lines if x.startswith("steps")).split()[1])
        return steps, 60 * float(next(x for x in lines if x.startswith("wall time")).split()[2])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    timer = ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
    return int(ckpt["global_step"]), float(timer.get("train", 0.0))


def prior_temperature(bundle) -> float:
    """What ``aurl sample`` decodes prior latents at: 1.0 for token decoders, 0 for the grid."""
    return 0.0 if bundle.config.model.vae.decoder == "grid" else 1.0


def prior_suite(bundle, data: Path, out: Path, num: int, bars: int) -> dict:
    """``num`` prior pieces of ``bars`` bars (as ``aurl sample`` decodes them: temperature 1,
    top-p 0.95, seeds 0..num-1) written as MIDI to ``out``, then the evaluation suite against the
    test split (what ``aurl evaluate --samples OUT --reference DATA --split test`` prints)."""
    from aurl.evaluation.samples import evaluate_samples
    from aurl.generation.export import write_midi
    from aurl.generation.latent import sample_rows

    tok = bundle.tokenizer
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    rows = sample_rows(
        bundle, num=num, bars=bars, seed=0, temperature=prior_temperature(bundle), top_p=0.95
    )
    for i, body in enumerate(rows):
        write_midi(tok.decode([tok.bos_id, *body, tok.eos_id]), out / f"piece_{i:03d}.mid")
    decode_s = time.perf_counter() - t0
    res = evaluate_samples(out, data, split="test", json_path=out.with_suffix(".eval.json"))
    return {
        "num": num,
        "bars": bars,
        "dir": str(shown(out)),
        "decode_wall_s": round(decode_s, 1),
        "num_evaluated": res["num_samples"],
        "skipped": len(res["skipped"]),
        "mean_overlap_area": res["mean_overlap_area"],
        "mean_kl": res["mean_kl"],
        "frechet_distance": res["frechet_distance"],
        "overlap_area": {k: v["overlap_area"] for k, v in res["features"].items()},
        "samples_mean": {k: v["samples_mean"] for k, v in res["features"].items()},
        "reference_mean": {k: v["reference_mean"] for k, v in res["features"].items()},
    }


# ---------------------------------------------------------------------------------------------
# one mode


def run_mode(
    mode: str,
    data: Path,
    minutes: float,
    overrides: list[str],
    work: Path,
    samples: int,
    results: Path,  # the --out JSON: the GAN's loss curves go beside it
    skip_train: bool = False,
    config: Path = ROOT / "configs" / "bach_vae.yaml",
    pairs: int = 10,
    run_dir: Path | None = None,
    greedy_segments: int = 0,
    sample_bars: int = 16,
) -> dict:
    from aurl.bundle import load_bundle
    from aurl.data.dataset import PreparedData
    from aurl.generation.latent import decode_rows, encode_ids
    from aurl.training import run
    from aurl.training.vae_metrics import vae_metrics
    from aurl.training.vae_module import SegmentDataset, _split_pieces

    cfg = load_config(
        config,
        [f"model.mode={mode}", f"data.path={data}", f"trainer.max_time_minutes={minutes}",
         "trainer.max_steps=1000000", "trainer.val_every_steps=100", "trainer.checkpoint_every_steps=100",
         "trainer.samples_per_validation=0", *overrides],
    )  # fmt: skip
    if run_dir is not None:  # a run trained elsewhere (aurl train): measure it as it is
        skip_train = True
        config = run_dir / "config.yaml"
    run_dir = run_dir or work / mode
    if skip_train:  # measure the run already there (steps and training time from the run itself)
        steps, train_s = run_progress(run_dir)
        minutes = round(train_s / 60, 1)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resume of an older one
        t0 = time.perf_counter()
        load_before = os.getloadavg()
        run.train(cfg, run_dir)
        train_s = time.perf_counter() - t0
        steps = run_progress(run_dir)[0]

    bundle = load_bundle(run_dir)
    prepared = PreparedData(data)
    tok = bundle.tokenizer
    load_measure = os.getloadavg()
    t0 = time.perf_counter()
    metrics = vae_metrics(bundle, prepared, "test", greedy_segments=greedy_segments or 10**9)
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)

    # interpolation between the first segments of two held-out chorales
    test = _split_pieces(prepared, "test")
    model = bundle.model
    za, zb = encode_ids(model, tok, test[0]), encode_ids(model, tok, test[1])
    path = model.interpolate(za, zb, 6)
    ref = score_stats(tok, [list(p) for p in test])
    special = {tok.bos_id, tok.eos_id, tok.pad_id}
    decoded = {
        "grammar": decode_rows(bundle, path, 0.0, 1.0, seed=0)
    }  # what `aurl interpolate` writes
    if hasattr(model, "decode"):  # token decoders: also without the grammar (the grid has none)
        raw_rows = model.decode(path, 506, bos_id=tok.bos_id, eos_id=tok.eos_id)
        decoded["raw"] = [[i for i in r if i not in special] for r in raw_rows]
    ends = tuple(first_segment(model, tok, test[k])[0].tolist() for k in (0, 1))
    interp = {name: [interp_step(tok, ref, i, row, ends) for i, row in enumerate(rows)]
              for name, rows in decoded.items()}  # fmt: skip

    # prior samples vs test segments
    gen = torch.Generator().manual_seed(0)
    z = model.sample_latents(samples, gen)
    rows = decode_rows(bundle, z, prior_temperature(bundle), 0.95, seed=1)
    suite = prior_suite(bundle, data, work / f"{mode}_prior_samples", samples, sample_bars)
    seg_ds = SegmentDataset(test, tok, model.cfg.vae, model.cfg.max_seq_len, shuffle=False)
    seg_rows = [s[0].tolist() for s in seg_ds.segments]
    gen_st, test_st = score_stats(tok, rows), score_stats(tok, seg_rows)
    pc_l1 = float(np.abs(np.array(gen_st["pc_hist"]) - np.array(test_st["pc_hist"])).sum())
    checks = latent_checks(bundle, test, ref, pairs, 8, [0.1, 0.3, 0.6, 1.0])
    result = {
        "mode": mode,
        "train_minutes": minutes,
        "train_wall_s": round(train_s, 1),
        "steps": steps,
        "metrics": metrics,
        "steps_per_minute": round(steps / (train_s / 60), 2),
        "interpolation": interp,
        "interpolation_middle_ok": {
            name: all(r["decodable"] and r["pitches_in_test_range"] for r in rows[1:-1])
            for name, rows in interp.items()
        },
        "prior_samples": {
            "num": samples,
            "pc_hist_l1_vs_test": pc_l1,
            "mean_polyphony": gen_st["mean_polyphony"],
            "test_mean_polyphony": test_st["mean_polyphony"],
            "notes_per_beat": gen_st["notes_per_beat"],
            "test_notes_per_beat": test_st["notes_per_beat"],
            "decodable_notes": gen_st["notes"],
        },
        "gan_losses_png": None,
        "prior_suite": suite,
        "latent_checks": checks,
        "decoder": bundle.config.model.vae.decoder,
        "config": str(shown(config)),
        "run": str(shown(run_dir)),
        "loadavg": {
            "train_start": None if skip_train else load_before,
            "measure_start": load_measure,
        },
    }
    if (run_dir / "gan_losses.png").is_file():
        # issue 4's name for the default --out vae.json, else beside --out: X_losses.png
        name = "vae_gan_losses.png" if results.stem == "vae" else f"{results.stem}_losses.png"
        dest = results.with_name(name)
        shutil.copyfile(run_dir / "gan_losses.png", dest)
        result["gan_losses_png"] = str(dest)
    return result


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def render(results: list[dict]) -> str:
    rows = [
        ("steps in the budget", lambda r: f"{r['steps']}"),
        ("recon acc, teacher-forced", lambda r: _fmt(r['metrics'].get('recon_acc_teacher'))),
        ("recon acc, greedy from mu", lambda r: _fmt(r['metrics'].get('recon_acc_greedy'))),
        ("recon note F1, greedy from mu", lambda r: f"{r['metrics']['recon_note_f1_greedy']:.3f}"),
        ("recon bits/note (z = mu)", lambda r: f"{r['metrics']['bits_per_note']:.3f}"),
        ("ELBO bits/note (bound)", lambda r: f"{r['metrics']['elbo_bits_per_note']:.3f}"),
        ("KL global / bar (nats)", lambda r: f"{r['metrics']['kl_global']:.2f} / {r['metrics']['kl_bar']:.2f}"),
        ("active units global / bar", lambda r: f"{r['metrics']['active_units_global']} / {r['metrics']['active_units_bar']}"),
        ("steps per minute", lambda r: f"{r['steps_per_minute']:.1f}"),
        ("interp. note F1 vs A, steps 0..5", lambda r: " ".join(f"{x['note_f1_vs_a']:.2f}" for x in r["interpolation"]["grammar"])),
        ("interp. note F1 vs B, steps 0..5", lambda r: " ".join(f"{x['note_f1_vs_b']:.2f}" for x in r["interpolation"]["grammar"])),
        ("interp. middle steps valid (grammar / raw)",
         lambda r: f"{r['interpolation_middle_ok']['grammar']} / {r['interpolation_middle_ok'].get('raw', '-')}"),
        ("prior: pitch-class L1 vs test", lambda r: f"{r['prior_samples']['pc_hist_l1_vs_test']:.3f}"),
        ("prior: polyphony (test)", lambda r: f"{r['prior_samples']['mean_polyphony']:.2f} ({r['prior_samples']['test_mean_polyphony']:.2f})"),
        ("prior: notes/beat (test)", lambda r: f"{r['prior_samples']['notes_per_beat']:.2f} ({r['prior_samples']['test_notes_per_beat']:.2f})"),
        ("active units vs posterior noise, global / bar",
         lambda r: f"{r['metrics'].get('active_units_vs_noise_global', '-')} / {r['metrics'].get('active_units_vs_noise_bar', '-')}"),
        ("interp. 8 steps: Spearman F1 vs A / vs B (mean over pairs)",
         lambda r: f"{r['latent_checks']['spearman_a_mean']:.2f} / {r['latent_checks']['spearman_b_mean']:.2f} ({len(r['latent_checks']['interpolation_pairs'])} pairs)"),
        ("interp. 8 steps: every step valid", lambda r: f"{r['latent_checks']['interp_all_valid']}"),
        ("vary: mean F1 to source at 0.1 / 0.3 / 0.6 / 1.0",
         lambda r: " / ".join(f"{v['mean_f1_to_source']:.2f}" for v in r["latent_checks"]["vary"])),
        ("prior pieces through the evaluation suite: mean overlap area / Frechet",
         lambda r: f"{r['prior_suite']['mean_overlap_area']:.3f} / {r['prior_suite']['frechet_distance']:.2f} ({r['prior_suite']['num_evaluated']} x {r['prior_suite']['bars']} bars)"),
        ("greedy recon segments", lambda r: f"{r['metrics']['greedy_segments']} of {r['metrics']['segments']}"),
        ("vary: monotonic / identical variations",
         lambda r: f"{r['latent_checks']['vary_monotonic']} / {r['latent_checks']['vary_identical_total']}"),
        ("load average (1 min) at train / measure start",
         lambda r: f"{(r['loadavg']['train_start'] or ['-'])[0]} / {r['loadavg']['measure_start'][0]:.1f}"),
    ]  # fmt: skip
    head = "| metric | " + " | ".join(r["mode"] for r in results) + " |"
    lines = [head, "|" + " --- |" * (len(results) + 1)]
    lines += ["| " + name + " | " + " | ".join(f(r) for r in results) + " |" for name, f in rows]
    return "\n".join(lines)


def verdict(results: list[dict]) -> str:
    """One plain sentence: did the adversarial term help on these figures?"""
    by = {r["mode"]: r for r in results}
    if set(by) != {"vae", "vae_gan"}:
        return "needs both modes"
    v, g = by["vae"], by["vae_gan"]
    # (name, vae value, vae_gan value); lower is better for each
    figures = [
        ("reconstruction bits/note", v["metrics"]["bits_per_note"], g["metrics"]["bits_per_note"]),
        ("prior pitch-class distance", v["prior_samples"]["pc_hist_l1_vs_test"], g["prior_samples"]["pc_hist_l1_vs_test"]),
        ("prior polyphony error",
         abs(v["prior_samples"]["mean_polyphony"] - v["prior_samples"]["test_mean_polyphony"]),
         abs(g["prior_samples"]["mean_polyphony"] - g["prior_samples"]["test_mean_polyphony"])),
        ("prior note-density error",
         abs(v["prior_samples"]["notes_per_beat"] - v["prior_samples"]["test_notes_per_beat"]),
         abs(g["prior_samples"]["notes_per_beat"] - g["prior_samples"]["test_notes_per_beat"])),
        ("greedy reconstruction note F1 (as 1 - F1)",
         1 - v["metrics"]["recon_note_f1_greedy"], 1 - g["metrics"]["recon_note_f1_greedy"]),
    ]  # fmt: skip
    # A single seed at a few minutes of CPU: count a figure only if it moved by more than 5 %.
    better = [n for n, a, b in figures if b < a * 0.95]
    worse = [n for n, a, b in figures if b > a * 1.05]
    if not better:
        tail = f"; it was worse on {', '.join(worse)}" if worse else ""
        return f"The adversarial term did not help: no figure improved by more than 5 %{tail}."
    tail = f", worse on {', '.join(worse)}" if worse else ""
    return (
        f"VAE-GAN was better by more than 5 % on {', '.join(better)}{tail} "
        f"(single seed, {v['train_minutes']} min each)."
    )


def shown(path: str | Path) -> Path:
    """``path`` relative to the repository when it lies inside it (results stay machine-neutral)."""
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("data", type=Path, help="prepared Bach directory (aurl prepare bach --out DIR)")
    p.add_argument("--minutes", type=float, default=3.0, help="training wall time per mode")
    p.add_argument(
        "--samples", type=int, default=100, help="prior samples for the musical statistics"
    )
    p.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS / "vae.json")
    p.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "bench_vae",
        help="run directories (WORK/vae, WORK/vae_gan; replaced), kept for aurl interpolate/evaluate",
    )  # fmt: skip
    p.add_argument(
        "--modes", nargs="+", default=["vae", "vae_gan"], choices=["vae", "vae_gan"],
        help="modes to train (an ablation of one mode can skip the other)",
    )  # fmt: skip
    p.add_argument(
        "--skip-train", action="store_true",
        help="measure the runs already in WORK (steps and wall time from their summary.txt)",
    )  # fmt: skip
    p.add_argument(
        "--config", type=Path, default=ROOT / "configs" / "bach_vae.yaml", help="training config"
    )
    p.add_argument("--pairs", type=int, default=10, help="test pairs for the interpolation check")
    p.add_argument(
        "--run", type=Path, help="measure this run directory (aurl train --out) instead of training"
    )
    p.add_argument(
        "--greedy-segments", type=int, default=0,
        help="test segments decoded greedily for the reconstruction F1 (0 = all)",
    )  # fmt: skip
    p.add_argument("--sample-bars", type=int, default=16, help="bars per prior piece")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = p.parse_intermixed_args()  # overrides may follow the options
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    overrides = (TINY if args.tiny else []) + list(args.overrides)
    torch.set_num_threads(args.threads)
    results = [
        run_mode(
            m,
            args.data,
            args.minutes,
            overrides,
            args.work,
            args.samples,
            args.out,
            skip_train=args.skip_train,
            config=args.config,
            pairs=args.pairs,
            run_dir=args.run,
            greedy_segments=args.greedy_segments,
            sample_bars=args.sample_bars,
        )
        for m in ([load_config(args.run / "config.yaml").model.mode] if args.run else args.modes)
    ]
    blob = {
        "data": str(args.data),
        "overrides": overrides,
        "torch_threads": torch.get_num_threads(),
        "results": results,
        "verdict": verdict(results),
        "notes": "bits/note here is a reconstruction NLL -log p(x|z=mu), not comparable with the LM's bits/note",
    }
    atomic_write_text(args.out, json.dumps(blob, indent=2) + "\n")
    title = " vs ".join({"vae": "VAE", "vae_gan": "VAE-GAN"}[r["mode"]] for r in results)
    md = f"# {title} ({results[0]['train_minutes']} min each, Bach test split)\n\n"
    md += f"`python {shlex.join(sys.argv)}`"
    if args.run:
        md += f" (measured `{shown(args.run)}`, trained with `aurl train`, not here)"
    elif args.skip_train:
        md += f" (measured the runs already in `{shown(args.work)}`, not trained here)"
    md += "\n\n"
    md += render(results) + "\n" + ("" if len(results) < 2 else f"\n{blob['verdict']}\n")
    if results[-1]["gan_losses_png"]:
        md += f"\nGAN loss curves: `{shown(results[-1]['gan_losses_png'])}`\n"
    atomic_write_text(args.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
