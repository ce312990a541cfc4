"""Benchmark `aurl prepare` on the 800 POP909 songs (and tokens per beat on Bach and POP909).

Run:  .venv/bin/python benchmarks/bench_prepare.py [--limit N]

(a) `aurl prepare` throughput (files/s, notes/s) with --workers 1 and 2, each a subprocess;
(b) a plain loop `symusic.Score(path)` + MidiTok `encode` with the same tokenizer config on the same
    files, and the ratio prepare / plain (target >= 1.0);
(c) peak memory of `aurl prepare` (RSS summed over its process tree, sampled every 0.1 s, and the
    largest single process from getrusage; target < 2 GB);
(d) tokens per beat without and with BPE (vocab 2000, trained on the train split) for midilike,
    remi and tsd on Bach and POP909.
Writes benchmarks/results/prepare.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
POP909 = REPO / ".." / "shared" / "datasets" / "pop909"
AURL = [sys.executable, "-m", "aurl.cli"]


class _SkipTpbError(Exception):
    """Raised to skip part (d) with --skip-tpb."""


def run_prepare(args: list[str]) -> dict:
    """Run `aurl prepare` as a subprocess; wall time and peak memory of its process tree."""
    started = time.perf_counter()
    proc = psutil.Popen(
        [*AURL, "prepare", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"aurl prepare {' '.join(args)} exited {proc.returncode}")
    return {"wall_s": wall, "peak_tree_rss_mb": peak / 2**20, "stdout": proc.stdout.read().decode()}


def plain_loop(files: list[Path], kind: str) -> dict:
    """symusic parse + MidiTok encode, same config, one process: what prepare must not be slower than."""
    from symusic import Score

    from aurl.config import TokenizerConfig
    from aurl.data.tokenizers import _KINDS, _miditok_config

    tok = _KINDS[kind](_miditok_config(TokenizerConfig(kind=kind)))
    started = time.perf_counter()
    tokens = 0
    for f in files:
        tokens += len(tok.encode(Score(f)).ids)
    return {"wall_s": time.perf_counter() - started, "tokens": tokens}


def tokens_per_beat(prepared: Path, vocab: int) -> dict:
    """Tokens per beat of a prepared dir, and after BPE trained on its train split."""
    from aurl.data.dataset import PreparedData

    data = PreparedData(prepared)
    beats = data.manifest["beats"]
    tok = data.tokenizer
    train = data.split("train")
    started = time.perf_counter()
    tok.train_bpe((train.piece(i) for i in range(len(train))), vocab)
    train_s = time.perf_counter() - started
    total_base = total_bpe = 0
    for name in ("train", "val", "test"):
        sd = data.split(name)
        for i in range(len(sd)):
            piece = sd.piece(i)
            total_base += len(piece)
            total_bpe += len(tok.apply_bpe(piece))
    return {
        "tokens_per_beat": total_base / beats,
        "tokens_per_beat_bpe": total_bpe / beats,
        "bpe_shortening": 1 - total_bpe / total_base,
        "bpe_train_s": train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="use only the first N POP909 songs")
    parser.add_argument("--bpe", type=int, default=2000)
    parser.add_argument(
        "--skip-tpb", action="store_true", help="keep part (d) from the existing results file"
    )
    args = parser.parse_args()
    command = " ".join(["benchmarks/bench_prepare.py", *sys.argv[1:]])
    print(f"$ .venv/bin/python {command}\n")
    if not POP909.is_dir():
        raise SystemExit(f"{POP909.resolve()}: POP909 not found")
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    src = POP909
    files = sorted(POP909.glob("*/*.mid"))
    if args.limit:
        files = files[: args.limit]
        src = work / "input"
        src.mkdir()
        for f in files:
            shutil.copy(f, src / f.name)
    result: dict = {
        "command": command,
        "files": len(files),
        "throughput": {},
        "tokens_per_beat": {},
    }
    plains = [plain_loop(files, "midilike")]  # before and after: the machine is shared, load drifts
    try:
        for workers in (1, 2):
            out = work / f"pop909-midilike-w{workers}"
            r = run_prepare([str(src), "--out", str(out), "--workers", str(workers), "--force"])
            m = json.loads((out / "manifest.json").read_text())
            notes = sum(s["notes"] for s in m["splits"].values())
            r.update(
                files_s=len(files) / r["wall_s"],
                notes_s=notes / r["wall_s"],
                files_ok=m["files_ok"],
            )
            r["internal_s"] = m["timings"]
            del r["stdout"]
            result["throughput"][f"workers={workers}"] = r
        result["max_single_process_rss_mb"] = (
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        )
        plains.append(plain_loop(files, "midilike"))
        plain = {
            "wall_s": float(np.mean([p["wall_s"] for p in plains])),
            "runs_s": [p["wall_s"] for p in plains],
        }
        plain["files_s"] = len(files) / plain["wall_s"]
        result["plain_loop"] = plain
        for w in (1, 2):
            t = result["throughput"][f"workers={w}"]
            t["ratio_vs_plain"] = t["files_s"] / plain["files_s"]
            # without the subprocess start (imports of torch via miditok: several seconds here)
            t["ratio_vs_plain_tokenize_only"] = plain["wall_s"] / t["internal_s"]["tokenize"]
        result["load_average_end"] = list(psutil.getloadavg())
        dest = REPO / "benchmarks" / "results" / "prepare.json"
        if args.skip_tpb and dest.is_file():
            result["tokens_per_beat"] = json.loads(dest.read_text())["tokens_per_beat"]
            raise _SkipTpbError
        from aurl.data.corpus import bach_midi_dir

        bach = bach_midi_dir()
        if args.limit:  # a quick smoke run: the first N chorales too
            (work / "bach").mkdir()
            for f in sorted(bach.glob("*.mid"))[: args.limit]:
                shutil.copy(f, work / "bach" / f.name)
            bach = work / "bach"
        for corpus, path in (("bach", bach), ("pop909", src)):
            for kind in ("midilike", "remi", "tsd"):
                out = work / f"{corpus}-{kind}"
                reuse = corpus == "pop909" and kind == "midilike"
                if reuse:
                    out = work / "pop909-midilike-w2"
                else:
                    run_prepare(
                        [str(path), "--out", str(out), "--tokenizer", kind, "--workers", "2"]
                    )
                result["tokens_per_beat"][f"{corpus}/{kind}"] = tokens_per_beat(out, args.bpe)
                print(f"  done {corpus}/{kind}", file=sys.stderr)
    except _SkipTpbError:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dest = REPO / "benchmarks" / "results" / "prepare.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(dest)

    print(f"POP909, {len(files)} files, midilike\n")
    print(
        "| run | wall s | files/s | notes/s | ratio vs plain | same, tokenizing only | peak RSS (tree) MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, t in result["throughput"].items():
        print(
            f"| aurl prepare {name} | {t['wall_s']:.1f} | {t['files_s']:.2f} | {t['notes_s']:.0f} | "
            f"{t['ratio_vs_plain']:.2f} | {t['ratio_vs_plain_tokenize_only']:.2f} | {t['peak_tree_rss_mb']:.0f} |"
        )
    p = result["plain_loop"]
    runs = ", ".join(f"{r:.1f}" for r in p["runs_s"])
    print(
        f"| plain symusic + miditok loop (mean of {runs} s) | {p['wall_s']:.1f} | {p['files_s']:.2f} | | 1.00 | | |"
    )
    print(f"\nload average at the end: {result['load_average_end']}")
    print(
        f"\nlargest single process (getrusage children): {result['max_single_process_rss_mb']:.0f} MB\n"
    )
    print(
        f"| corpus/tokenizer | tokens per beat | with BPE {args.bpe} | shorter by | BPE train s |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, t in result["tokens_per_beat"].items():
        print(
            f"| {name} | {t['tokens_per_beat']:.2f} | {t['tokens_per_beat_bpe']:.2f} | "
            f"{100 * t['bpe_shortening']:.0f} % | {t['bpe_train_s']:.1f} |"
        )
    print(
        f"\nwrote {dest.relative_to(REPO)}; median prepare noise on this machine is 10-15 % (FACTS.md)"
    )


if __name__ == "__main__":
    main()
