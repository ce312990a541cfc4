"""Deployment formats of one model: size, bits/note on the test split, decode tokens/s at batch 1/8/16.

    .venv/bin/python benchmarks/bench_export.py                     # bach_small (~4 min on 2 cores)
    .venv/bin/python benchmarks/bench_export.py --quick             # smoke run

Rows: the torch bundle as shipped (safetensors, run in fp32), the same with torchao's dynamic INT8
(eager, in memory), its ONNX export (fp32) and the ONNX
export with onnxruntime's dynamic INT8 quantization, both written here by ``aurl export --format
onnx [--quantize int8]``. Bits/note come from ``aurl.evaluation.likelihood.evaluate`` on the test
split (the same windows for every row). Decode: a 32-token prompt per row is prefilled, then
``--steps`` single-token steps through the model's KV cache (the loop ``generation.sample`` runs);
tokens/s = rows x steps / time, the best of ``--repeats`` on 1 thread (other processes on the shared
cores only ever add time). The load average is recorded beside each row.
Results: benchmarks/results/export.json (+ .md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from aurl.bundle import load_bundle
from aurl.config import atomic_write_text
from aurl.evaluation.likelihood import evaluate

ROOT = Path(__file__).resolve().parents[1]


def _size_mb(directory: Path) -> float:
    files = [p for p in directory.iterdir() if p.suffix in (".onnx", ".safetensors", ".bin")]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


@torch.inference_mode()
def decode_rate(model, batch: int, steps: int, repeats: int, vocab: int) -> float:
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, vocab, (batch, 32), generator=g)
    nxt = torch.randint(1, vocab, (batch, steps), generator=g)
    best = float("inf")
    for _ in range(repeats):
        cache = model.new_cache(batch, 32 + steps + 1)
        model(prompt, cache=cache, logits_for="last")
        t0 = time.perf_counter()
        for i in range(steps):
            model(nxt[:, i : i + 1], cache=cache, logits_for="last")
        best = min(best, time.perf_counter() - t0)
    return round(batch * steps / best, 1)


def torchao_int8_row(args) -> dict:
    """The torch model with torchao's dynamic INT8 (``Int8DynamicActivationInt8WeightConfig``,
    the replacement of the deprecated ``torch.ao.quantization.quantize_dynamic``), run in eager mode
    on the CPU; size = its serialized state dict."""
    import copy
    import io

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from aurl.data.dataset import PreparedData
    from aurl.evaluation.likelihood import split_likelihood

    bundle = load_bundle(args.model)
    model = copy.deepcopy(bundle.model)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    load = os.getloadavg()[0]
    row = {"format": "torch int8 (torchao)", "dir": "(in memory)", "size_mb": round(len(buf.getvalue()) / 1e6, 2)}  # fmt: skip
    for b in args.batches:
        row[f"decode_tok_s_b{b}"] = decode_rate(model, b, args.steps, args.repeats, bundle.tokenizer.vocab_size)  # fmt: skip
    if not args.quick:
        data = PreparedData(args.data)
        res = split_likelihood(model, data.split("test"), bundle.tokenizer, bundle.config.model.max_seq_len)  # fmt: skip
        row["bits_per_note"] = round(res["bits_per_note"], 5)
    row["load_before"] = round(load, 2)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "bach_small")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bach")
    p.add_argument("--work", type=Path, default=Path("/tmp/aurl_bench_export"))
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats, args.batches = 16, 1, [1, 8]
    print(f"$ {' '.join(sys.argv)}", flush=True)
    torch.set_num_threads(1)
    dirs = {"torch fp32": args.model}
    for name, extra in (("onnx fp32", []), ("onnx int8", ["--quantize", "int8"])):
        out = args.work / name.replace(" ", "_")
        cmd = [sys.executable, "-m", "aurl.cli", "export", str(args.model), "--format", "onnx", "--out", str(out), *extra]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
        dirs[name] = out
    rows = []
    for name, directory in dirs.items():
        bundle = load_bundle(directory)
        vocab = bundle.tokenizer.vocab_size
        load = os.getloadavg()[0]
        row = {"format": name, "dir": str(directory), "size_mb": _size_mb(directory)}
        for b in args.batches:
            row[f"decode_tok_s_b{b}"] = decode_rate(
                bundle.model, b, args.steps, args.repeats, vocab
            )
        if not args.quick:
            res = evaluate(directory, args.data, split="test")
            row["bits_per_note"] = round(res["bits_per_note"], 5)
        row["load_before"] = round(load, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    rows.insert(1, torchao_int8_row(args))
    base = rows[0]
    for row in rows:
        for b in args.batches:
            row[f"speed_vs_torch_b{b}"] = round(row[f"decode_tok_s_b{b}"] / base[f"decode_tok_s_b{b}"], 2)  # fmt: skip
        if "bits_per_note" in row:
            row["bits_per_note_change"] = round(row["bits_per_note"] - base["bits_per_note"], 5)
    res = {"command": " ".join(sys.argv), "model": str(args.model), "data": str(args.data),
           "steps": args.steps, "threads": 1, "rows": rows}  # fmt: skip
    head = ["format", "size MB", "bits/note (Δ)"] + [f"tok/s b{b} (× torch)" for b in args.batches] + ["load"]  # fmt: skip
    lines = [f"`{res['command']}`", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        bits = (
            f"{r['bits_per_note']} ({r['bits_per_note_change']:+.5f})"
            if "bits_per_note" in r
            else "-"
        )
        speeds = [f"{r[f'decode_tok_s_b{b}']} ({r[f'speed_vs_torch_b{b}']}×)" for b in args.batches]
        lines.append("| " + " | ".join([r["format"], str(r["size_mb"]), bits, *speeds, str(r["load_before"])]) + " |")  # fmt: skip
    md = "\n".join(lines) + "\n"
    name = "export_quick" if args.quick else "export"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{name}.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(args.out / f"{name}.md", md)
    print(md)


if __name__ == "__main__":
    main()
