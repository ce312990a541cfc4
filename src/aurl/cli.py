"""The ``aurl`` command: one dispatch table, each entry parses its flags and calls a plain function.

No logic lives here beyond parsing and calling; every command imports its stage lazily so that
``aurl --help`` stays instant. Library code logs through ``logging``; only this module prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "bach_small"
DEFAULT_VAE = DEFAULT_MODEL.parent / "bach_vae"  # sample / interpolate / vary without --model


def _tokenizer_cfg(args: argparse.Namespace):
    from aurl.config import TokenizerConfig

    kw = {"kind": args.tokenizer}
    if getattr(args, "bpe", 0):
        kw["bpe_vocab_size"] = args.bpe
    return TokenizerConfig(**kw)


# ---------------------------------------------------------------------------------------------
# data


def _add_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        help="a folder of MIDI/MusicXML/MEI/ABC/kern files, 'bach', 'music21:NAME' "
        "(quartets, palestrina, monteverdi), or 'merge'",
    )
    p.add_argument("parts", nargs="*", help="with 'merge': the prepared slice directories to join")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--tokenizer", default="midilike", choices=["midilike", "remi", "tsd"])
    p.add_argument("--bpe", type=int, default=0, help="train BPE to this vocabulary size (0 = off)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--num-shards", type=int, default=1, help="split the corpus into K slices...")
    p.add_argument("--shard-index", type=int, default=0, help="...and prepare slice I of them")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching cache exists")
    _add_timeout(p)


def _add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds one file may take before it is reported as failed (default 300; 0 = no limit)",
    )


def _timeout(args: argparse.Namespace) -> float:
    from aurl.data.filepool import DEFAULT_TIMEOUT_S

    return DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout


def _run_prepare(args: argparse.Namespace) -> int:
    from aurl.data import prepare

    if args.input == "merge":
        from aurl.data.merge import merge

        summary = merge([Path(x) for x in args.parts], args.out)
    else:
        summary = prepare.prepare(
            args.input,
            args.out,
            _tokenizer_cfg(args),
            workers=args.workers,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
            force=args.force,
            timeout=_timeout(args),
        )
    print(summary.render())
    return 0 if summary.files_ok > 0 else 1


def _add_roundtrip(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a folder of music files (or 'bach', 'music21:NAME')")
    p.add_argument("--tokenizer", default="midilike", choices=["midilike", "remi", "tsd"])
    p.add_argument("--bpe", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the per-file report here")
    p.add_argument("--workers", type=int, default=1, help="processes loading files")
    _add_timeout(p)


def _run_roundtrip(args: argparse.Namespace) -> int:
    from aurl.data import roundtrip

    report = roundtrip.roundtrip(
        args.input,
        _tokenizer_cfg(args),
        json_path=args.json,
        workers=args.workers,
        timeout=_timeout(args),
    )
    print(roundtrip.render(report))
    return 0 if report["summary"]["files_inexact"] == 0 else 1


def _add_tokens(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["describe"])
    p.add_argument("--tokenizer", default="midilike", choices=["midilike", "remi", "tsd"])
    p.add_argument("--data", type=Path, help="describe the tokenizer saved in this prepared dir")


def _run_tokens(args: argparse.Namespace) -> int:
    from aurl.data import tokenizers

    tok = (
        tokenizers.MusicTokenizer.load(args.data)
        if args.data
        else tokenizers.MusicTokenizer(_tokenizer_cfg(args))
    )
    print(tok.describe())
    return 0


# ---------------------------------------------------------------------------------------------
# training and evaluation


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML preset (configs/*.yaml)")
    p.add_argument("--data", type=Path, help="prepared data directory (overrides data.path)")
    p.add_argument("--out", type=Path, help="run directory")
    p.add_argument("--resume", type=Path, help="continue the run in this directory")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-3")


def _run_train(args: argparse.Namespace) -> int:
    from aurl.training import run

    if args.resume:
        run.resume(args.resume, overrides=args.overrides)
        return 0
    if args.out is None:
        raise SystemExit("aurl train: --out RUN_DIR is required (or --resume RUN_DIR)")
    from aurl.config import load_config

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    cfg = load_config(args.config, overrides)
    run.train(cfg, args.out)
    return 0


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="base YAML preset (configs/*.yaml)")
    p.add_argument("--data", type=Path, required=True, help="prepared data directory")
    p.add_argument(
        "--out", type=Path, required=True, help="search directory (study.db, trial_NNN/)"
    )
    p.add_argument("--trials", type=int, default=8, help="finished trials to reach (resumes)")
    p.add_argument("--minutes-per-trial", type=float, default=5.0, help="0: no time limit")
    p.add_argument(
        "--steps-per-trial", type=int, default=0,
        help="train each trial this many steps (fair when the cores are shared)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every trial")


def _run_tune(args: argparse.Namespace) -> int:
    from aurl.training import tune

    rows = tune.tune(
        args.config, args.data, args.out, trials=args.trials,
        minutes_per_trial=args.minutes_per_trial, steps_per_trial=args.steps_per_trial,
        overrides=args.overrides, seed=args.seed,
    )  # fmt: skip
    print(f"aurl tune: {len(rows)} trial(s) in {args.out} (study.db, trials.csv, trials.md)")
    print(tune.render(rows))
    return 0


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, nargs="?", help="run or model directory (likelihood mode)")
    p.add_argument("--data", type=Path, help="prepared data directory (likelihood mode)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--samples", type=Path, help="a folder of MIDI to judge against --reference (feature mode)"
    )
    p.add_argument("--reference", type=Path, help="prepared data directory to compare with")
    p.add_argument("--report", type=Path, help="with --samples: write report.png + index.html here")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference features")


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    if args.samples is not None:
        from aurl.evaluation import samples

        if args.reference is None:
            raise ValueError("--samples needs --reference DATA (a prepared data directory)")
        result = samples.evaluate_samples(
            args.samples, args.reference, split=args.split, json_path=args.json,
            report_dir=args.report, cache=not args.no_cache,
        )  # fmt: skip
        print(samples.render_table(result))
        return 0
    if args.model is None or args.data is None:
        raise ValueError("aurl evaluate needs MODEL --data DATA, or --samples DIR --reference DATA")
    from aurl.evaluation import likelihood

    result = likelihood.evaluate(
        args.model, args.data, split=args.split, json_path=args.json, batch_size=args.batch_size
    )
    print(json.dumps(result, indent=2))
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", type=Path, help="run directory (or, with --format onnx, a model directory)"
    )
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="storage type of the weights (float16 halves the file; loading casts back to fp32)",
    )
    p.add_argument(
        "--format",
        default="safetensors",
        choices=["safetensors", "onnx"],
        help="onnx: prefill + one-step decode graphs for onnxruntime",
    )
    p.add_argument(
        "--quantize", choices=["int8"], help="with --format onnx: INT8 dynamic quantization"
    )
    p.add_argument(
        "--average",
        type=int,
        default=0,
        metavar="K",
        help="average the weights of the last K kept checkpoints (train with "
        "trainer.keep_checkpoints=K); reports val bits/note against the newest alone",
    )


def _run_export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        from aurl.deploy.onnx_export import export_onnx

        path = export_onnx(args.run, args.out, quantize=args.quantize)
        print(f"exported {args.run} -> {path} (ONNX{', int8' if args.quantize else ''})")
        return 0
    if args.quantize:
        raise ValueError("--quantize int8 needs --format onnx (onnxruntime dynamic quantization)")
    from aurl.training import export

    path = export.export_run(
        args.run, args.out, which=args.checkpoint, weights_dtype=args.dtype, average=args.average
    )
    print(f"exported {args.run} -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# generation


def _add_common_generation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model or run directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--no-wav", action="store_true", help="skip audio rendering")


def _add_generate(p: argparse.ArgumentParser) -> None:
    _add_common_generation(p)
    p.add_argument("--num", type=int, default=4, help="pieces to generate")
    p.add_argument(
        "--only-midi", action="store_true",
        help="write MIDI only (no audio, MusicXML or piano roll): the fast way to make evaluation sets",
    )  # fmt: skip
    length = p.add_mutually_exclusive_group()
    length.add_argument("--bars", type=int, help="length in bars")
    length.add_argument("--seconds", type=float, help="length in seconds of music")
    length.add_argument("--tokens", type=int, help="length in tokens")
    p.add_argument("--prompt", type=Path, help="MIDI file to continue")
    p.add_argument("--key", help="constrain to a key, e.g. D:min or F#:maj")
    p.add_argument("--pitch-range", help="LOW-HIGH MIDI pitches, e.g. 36-84")
    p.add_argument(
        "--max-polyphony", type=int, help="most notes at once (default: the corpus's; 0 = no limit)"
    )
    p.add_argument(
        "--programs",
        help="General MIDI programs to play, e.g. 0 or 0,24 (default: the corpus's main instrument(s))",
    )
    p.add_argument("--density", type=float, help="target notes per beat (soft)")
    p.add_argument("--soft", action="store_true", help="constraints penalize instead of forbid")
    p.add_argument(
        "--time-signature", help="keep this meter, e.g. 3/4 (default: the prompt's, else 4/4)"
    )
    p.add_argument("--beam", type=int, default=1, help="beam width (1 = sampling)")
    p.add_argument("--batch-size", type=int, default=4)


def _run_generate(args: argparse.Namespace) -> int:
    from aurl.generation import pipeline

    summary = pipeline.generate_from_args(args)
    print(summary.render())
    return 0


def _add_infill(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="MIDI file")
    p.add_argument(
        "--bars", required=True, help="bars to regenerate, e.g. 5-8 (1-based, inclusive)"
    )
    _add_common_generation(p)


def _run_infill(args: argparse.Namespace) -> int:
    from aurl.generation import pipeline

    summary = pipeline.infill_from_args(args)
    print(summary.render())
    return 0


# ---------------------------------------------------------------------------------------------
# VAE


def _add_sample(p: argparse.ArgumentParser) -> None:
    _add_common_generation(p)
    p.set_defaults(model=DEFAULT_VAE)
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--bars", type=int, default=8)
    # token VAEs sample their decoder at 1.0; the grid VAE decodes each cell's most likely class
    # (its cells are drawn independently, so sampling them scatters notes): None = per model
    p.set_defaults(temperature=None)


def _add_interpolate(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument(
        "--bars", type=int, default=8,
        help="interpolate the first BARS bars, segment by segment (within the shorter piece)",
    )  # fmt: skip
    _add_common_generation(p)
    p.set_defaults(model=DEFAULT_VAE)
    p.set_defaults(temperature=0.0)  # greedy: each step shows its latent point, not sampling noise


def _add_vary(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path)
    p.add_argument("--amount", type=float, default=0.3)
    p.add_argument("--num", type=int, default=4)
    _add_common_generation(p)
    p.set_defaults(model=DEFAULT_VAE)
    p.set_defaults(temperature=0.0)  # greedy: variations come from the latent perturbation


def _run_vae(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from aurl.generation import latent

        summary = getattr(latent, f"{action}_from_args")(args)
        print(summary.render())
        return 0

    return run


# ---------------------------------------------------------------------------------------------
# serving


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model, run or ONNX directory")
    p.add_argument(
        "--host", default="127.0.0.1", help="listen address (default: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (504 after)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the decode loop")
    p.add_argument(
        "--no-batching", action="store_true", help="one request at a time (the CLI's own loop)"
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=1,
        help="processes writing MIDI/MusicXML (0: a thread)",
    )


def _run_serve(args: argparse.Namespace) -> int:
    from aurl.serving.app import ServeConfig, serve

    cfg = ServeConfig(
        host=args.host, port=args.port, max_batch=args.max_batch, max_queue=args.max_queue,
        timeout_s=args.timeout, threads=args.threads, batching=not args.no_batching,
        decode_workers=args.decode_workers,
    )  # fmt: skip
    print(f"aurl serve: {args.model} on http://{args.host}:{args.port}/ (API docs at /docs)")
    serve(str(args.model), cfg)
    return 0


# ---------------------------------------------------------------------------------------------
# analysis


def _add_analyze(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="a MIDI/MusicXML/ABC/kern file or a folder (recursive)")
    p.add_argument("--json", type=Path, required=True, help="write the analysis of every file here")
    p.add_argument(
        "--report", type=Path, help="also write one PNG picture per file into this folder"
    )
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")


def _run_analyze(args: argparse.Namespace) -> int:
    from aurl.analysis.run import analyze_paths, write_json

    result = analyze_paths(args.input, workers=args.workers, report_dir=args.report)
    write_json(result, args.json)
    files = result["files"]
    bad = [f for f in files if "error" in f]
    for f in bad:
        print(f"error: {f['error']}", file=sys.stderr)
    if len(files) == 1 and not bad:
        f = files[0]
        print(
            f"{f['path']}: key {f['global_key']}, {len(f['beats'])} beats ({f['beat_source']}), "
            f"{len(f['chords'])} chords, {len(f['melody'])} melody notes, {len(f['sections'])} sections, "
            f"{len(f['motifs'])} motifs"
        )
    print(f"analysed {len(files) - len(bad)} of {len(files)} files -> {args.json}")
    return 0 if len(bad) < len(files) or not files else 1


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "prepare": ("MIDI folder -> tokenized, sharded training data", _add_prepare, _run_prepare),
    "roundtrip": ("encode -> decode -> diff every file", _add_roundtrip, _run_roundtrip),
    "tokens": ("inspect the token vocabulary", _add_tokens, _run_tokens),
    "train": ("train a model (Lightning)", _add_train, _run_train),
    "tune": ("hyperparameter search (Optuna, resumable)", _add_tune, _run_tune),
    "evaluate": (
        "held-out likelihood, or generated MIDI vs a corpus (--samples)",
        _add_evaluate,
        _run_evaluate,
    ),
    "export": ("write a run's inference export (safetensors)", _add_export, _run_export),
    "generate": ("generate new pieces", _add_generate, _run_generate),
    "infill": ("regenerate bars of a piece in context", _add_infill, _run_infill),
    "sample": ("VAE: sample pieces from the prior", _add_sample, _run_vae("sample")),
    "interpolate": (
        "VAE: interpolate between two pieces",
        _add_interpolate,
        _run_vae("interpolate"),
    ),
    "vary": ("VAE: variations of a piece", _add_vary, _run_vae("vary")),
    "serve": ("HTTP API + web page with continuous batching", _add_serve, _run_serve),
    "analyze": (
        "beats, key, chords, melody, sections and motifs of MIDI files (JSON + pictures)",
        _add_analyze,
        _run_analyze,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aurl", description="Learn to compose from MIDI.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"aurl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # Training that diverged stops with a message meant for the user, not a traceback.
        if type(exc).__name__ != "TrainingDivergedError":
            raise
        print(f"aurl {args.command}: stopped: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"aurl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
