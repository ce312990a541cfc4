"""Attention kinds: forward+backward time and peak memory by length, and KV-cached decode speed.

    .venv/bin/python benchmarks/bench_attention.py            # full run (~5 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_attention.py --quick    # smoke run (seconds)
    .venv/bin/python benchmarks/bench_attention.py --vs-x-transformers   # decode vs x-transformers

Each measurement runs in a fresh subprocess so one case's allocations cannot hide another's.
Memory: the subprocess reads its resident set size (psutil) right before the forward+backward and
its peak resident set size (``ru_maxrss``) right after; ``peak_mib`` is the difference, i.e. how far
the run pushed the process's high-water mark above its resident size at the start. It counts every
allocation the run touched (activations, attention scores, gradients, allocator slack), and is a
lower bound only if an earlier phase (imports, model build) had peaked higher, which for these
sizes it does not (the model is ~25 MiB).
Time: the fastest of the timed repetitions after one untimed warm-up (the minimum, because other
processes on the shared machine only ever add time; the mean is kept too). Training cases use
2 threads, decoding 1 thread (``--decode-threads``): on this shared 2-core machine a 1-token step
is a chain of ~200 tiny ops, and with other processes running, OpenMP's per-op hand-off between
2 threads cost 3-4x (measured 56 vs 14 ms/token at load average 7). The load average at the start
of each case is recorded beside it, as these machines are shared.
Results go to benchmarks/results/attention.json and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from aurl.config import ModelConfig, atomic_write_text
from aurl.models import build_model, num_parameters

KINDS = ("full", "sliding_window", "hierarchical")
LENGTHS = (512, 1024, 2048, 4096, 8192)
RESULTS = Path(__file__).resolve().parent / "results" / "attention.json"


def model_config(kind: str, max_len: int) -> ModelConfig:
    """The bach_small-ish shape: ~6M parameters, d=256, 6 layers, 8 heads."""
    return ModelConfig(
        vocab_size=400, d_model=256, n_layers=6, n_heads=8, d_ff=1024, max_seq_len=max_len,
        dropout=0.0, attention=kind, window=256, global_stride=64,
    )  # fmt: skip


def run_train_case(kind: str, length: int, reps: int) -> dict:
    """One forward+backward case in this process: memory of the first run, mean time of ``reps``."""
    torch.manual_seed(0)
    model = build_model(model_config(kind, length)).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 400, (1, length + 1), generator=g)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x[:, :-1], x[:, 1:]).loss.backward()

    rss_before = psutil.Process().memory_info().rss
    step()  # warm-up, and the memory measurement
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "kind": kind, "length": length, "params": num_parameters(model),
        "fwd_bwd_s": min(times), "fwd_bwd_mean_s": sum(times) / len(times),
        "tokens_per_s": length / min(times), "peak_mib": (peak - rss_before) / 2**20, "reps": reps,
    }  # fmt: skip


def run_decode_case(kind: str, batch: int, prompt: int, new: int) -> dict:
    """Prefill ``prompt`` tokens, then time ``new`` single-token cached steps (greedy), in 4 chunks;
    the fastest chunk's ms/step is reported (and the mean over all steps)."""
    torch.manual_seed(0)
    model = build_model(model_config(kind, prompt + new)).eval()
    x = torch.randint(1, 400, (batch, prompt), generator=torch.Generator().manual_seed(1))
    chunk = new // 4
    with torch.inference_mode():
        for _ in range(2):  # the first pass warms up; the second is timed
            cache = model.new_cache(batch, prompt + new)
            tok = model(x, cache=cache, logits_for="last").logits.argmax(-1)  # (B, 1)
            chunks = []
            for _ in range(4):
                t0 = time.perf_counter()
                for _ in range(chunk):
                    tok = model(tok, cache=cache, logits_for="last").logits.argmax(-1)
                chunks.append((time.perf_counter() - t0) / chunk * 1e3)
    ms = min(chunks)
    return {
        "kind": kind, "batch": batch, "prompt": prompt, "new_tokens": 4 * chunk,
        "ms_per_step": ms, "ms_per_step_mean": sum(chunks) / len(chunks),
        "tokens_per_s": batch * 1e3 / ms,
    }  # fmt: skip


def decode_vs_x_transformers(rounds: int = 3, prompt: int = 256, new: int = 128) -> dict:
    """ms/token of cached greedy-ish decoding at batch 1, 1 thread, interleaved with x-transformers'
    ``generate(cache_kv=True)`` on a same-shaped rotary decoder (FACTS.md measured it at 5-7
    ms/token). Both timings include the prompt's prefill, amortized over the new tokens;
    x-transformers also applies its default top-k filter and sampling at each step."""
    from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

    torch.set_num_threads(1)
    torch.manual_seed(0)
    decoder = Decoder(dim=256, depth=6, heads=8, rotary_pos_emb=True, attn_flash=True)
    xt = AutoregressiveWrapper(
        TransformerWrapper(num_tokens=400, max_seq_len=1024, attn_layers=decoder)
    )
    ours = build_model(model_config("full", prompt + new)).eval()
    x = torch.randint(1, 400, (1, prompt), generator=torch.Generator().manual_seed(1))

    def run_xt() -> float:
        t0 = time.perf_counter()
        xt.generate(x, new, cache_kv=True)
        return (time.perf_counter() - t0) / new * 1e3

    def run_ours() -> float:
        t0 = time.perf_counter()
        cache = ours.new_cache(1, prompt + new)
        tok = ours(x, cache=cache, logits_for="last").logits.argmax(-1)  # (1, 1)
        for _ in range(new - 1):
            tok = ours(tok, cache=cache, logits_for="last").logits.argmax(-1)
        return (time.perf_counter() - t0) / new * 1e3

    xt.eval()
    times: dict[str, list[float]] = {"aurl": [], "x_transformers": []}
    with torch.inference_mode():
        run_xt(), run_ours()  # warm-up
        for _ in range(rounds):
            times["x_transformers"].append(run_xt())
            times["aurl"].append(run_ours())
    return {
        "ms_per_token": times, "load_avg_1m": os.getloadavg()[0],
        "params": {"aurl": num_parameters(ours), "x_transformers": num_parameters(xt)},
    }  # fmt: skip


def in_subprocess(args: list[str], threads: int) -> dict:
    """Run one ``--case`` in a fresh interpreter with ``threads`` torch threads."""
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, __file__, "--threads", str(threads), "--case", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed",
            "args": args,
        }
    return json.loads(out.stdout.strip().splitlines()[-1]) | {
        "threads": threads,
        "load_avg_1m": load,
    }


def markdown(results: dict, command: str) -> str:
    lines = [f"`{command}`", "", f"torch {torch.__version__}", ""]
    lines += [
        "| kind | tokens | fwd+bwd s | tokens/s | peak MiB | threads | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["train"]:
        if "error" in r:
            lines.append(f"| {' '.join(r['args'][1:])} | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['kind']} | {r['length']} | {r['fwd_bwd_s']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{r['peak_mib']:.0f} | {r['threads']} | {r['load_avg_1m']:.1f} |"
        )
    lines += [
        "",
        "| kind | batch | prompt | new | ms/step | tokens/s | threads | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["decode"]:
        if "error" in r:
            lines.append(f"| {' '.join(r['args'][1:])} | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['kind']} | {r['batch']} | {r['prompt']} | {r['new_tokens']} | {r['ms_per_step']:.2f} | "
            f"{r['tokens_per_s']:.0f} | {r['threads']} | {r['load_avg_1m']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny lengths, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--decode-threads", type=int, default=1, help="torch threads for decoding")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training cases")
    parser.add_argument(
        "--vs-x-transformers", action="store_true",
        help="only compare batch-1 cached decoding with x-transformers (results/decode_vs_xt.json)",
    )  # fmt: skip
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vs_x_transformers:
        result = decode_vs_x_transformers()
        atomic_write_text(
            RESULTS.with_name("decode_vs_xt.json"), json.dumps(result, indent=1) + "\n"
        )
        print(json.dumps(result))
        return
    if args.case:  # child process: one measurement, JSON on the last stdout line
        torch.set_num_threads(args.threads)
        what, kind, *nums = args.case
        fn = run_train_case if what == "train" else run_decode_case
        print(json.dumps(fn(kind, *map(int, nums))))
        return
    lengths = (128, 256) if args.quick else LENGTHS
    prompt, new = (64, 16) if args.quick else (256, 128)
    results: dict = {"train": [], "decode": [], "torch": torch.__version__}
    for length in lengths:
        for kind in KINDS:
            reps = 3 if length <= 2048 else (2 if length <= 4096 else 1)
            results["train"].append(
                in_subprocess(["train", kind, str(length), str(reps)], args.threads)
            )
            print(results["train"][-1], file=sys.stderr)
    for batch in (1, 16):
        for kind in KINDS:
            case = ["decode", kind, str(batch), str(prompt), str(new)]
            results["decode"].append(in_subprocess(case, args.decode_threads))
            print(results["decode"][-1], file=sys.stderr)
    command = "python benchmarks/bench_attention.py" + (" --quick" if args.quick else "")
    results["command"] = command
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    print(markdown(results, command))


if __name__ == "__main__":
    main()
