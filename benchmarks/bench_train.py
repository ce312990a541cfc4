"""Training benchmarks: speed vs x-transformers, quality at equal wall time, tokenizer comparison.

    python benchmarks/bench_train.py --part speed
    python benchmarks/bench_train.py --part quality --data data/bach --minutes 5
    python benchmarks/bench_train.py --part tokenizers --minutes 3 data/bach_midilike data/bach_remi ...

(a) speed: training tokens/s of Aurl's MusicTransformer and of ``x_transformers.TransformerWrapper(
    Decoder(..., attn_flash=True))`` of the same shape (~6.4M parameters), batch 8 x 512, fp32 and
    bf16 autocast, in one process; MFU against the matmul peak measured here (2048^2 matmuls).
(b) quality: both trained the same wall time on the same prepared split; test bits per note with
    ``aurl.evaluation.likelihood.split_likelihood`` (every test token predicted once).
(c) tokenizers: Aurl's model trained the same wall time on each prepared directory given; bits per
    note on its test split (comparable across tokenizations; bits per token is not).

Results merge into benchmarks/results/train.json and a Markdown table train.md (with the command).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from aurl.config import ModelConfig, atomic_write_text
from aurl.models import build_model, estimate_flops_per_token, num_parameters
from aurl.training.module import lr_factor, param_groups

log = logging.getLogger("bench_train")
RESULTS = Path(__file__).resolve().parent / "results"
# The FACTS.md reference shape: 6.5M-ish parameters, batch 8 x 512.
SHAPE = {"d_model": 256, "n_layers": 8, "n_heads": 4, "d_ff": 1024}
VOCAB = 560  # the default midilike vocabulary (aurl tokens describe)


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured GFLOP/s of an n x n matmul in ``dtype`` on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


class XTransformer(nn.Module):
    """x-transformers decoder with Aurl's output contract (``.logits``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from x_transformers import Decoder, TransformerWrapper

        self.net = TransformerWrapper(
            num_tokens=cfg.vocab_size,
            max_seq_len=cfg.max_seq_len,
            attn_layers=Decoder(
                dim=cfg.d_model, depth=cfg.n_layers, heads=cfg.n_heads,
                ff_mult=cfg.d_ff // cfg.d_model, attn_flash=True, rotary_pos_emb=True,
            ),
            use_abs_pos_emb=False,
            # x-transformers' default (untied) output layer: with tie_embedding=True its logits are
            # scaled by dim**-0.5 and the 5-minute Bach run stalled near the unigram loss (test
            # 3.14 nats/token vs 1.12 for Aurl, benchmarks/results/train.json history); untied
            # adds vocab x dim = 143k parameters (+2 %), stated in the results.
            tie_embedding=False,
        )  # fmt: skip

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> SimpleNamespace:
        logits = self.net(tokens)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=0)
        return SimpleNamespace(logits=logits, loss=loss)


def make(kind: str, cfg: ModelConfig) -> nn.Module:
    torch.manual_seed(0)
    return build_model(cfg) if kind == "aurl" else XTransformer(cfg)


def model_cfg(vocab: int, seq_len: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, max_seq_len=seq_len, dropout=0.0, **SHAPE)


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor, bf16: bool
) -> float:
    x, y = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(x, y).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def part_speed(args: argparse.Namespace) -> dict:
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    log.info("matmul peak: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s", peaks["fp32"], peaks["bf16"])
    cfg = model_cfg(VOCAB, args.seq_len)
    flops = estimate_flops_per_token(cfg, args.seq_len)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(1, VOCAB, (args.batch, args.seq_len + 1), generator=g)
    rows = []
    for kind in ("aurl", "x-transformers"):
        for prec in ("fp32", "bf16"):
            model = make(kind, cfg)
            opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
            for _ in range(args.warmup):
                train_step(model, opt, batch, prec == "bf16")
            t = time.perf_counter()
            for _ in range(args.steps):
                loss = train_step(model, opt, batch, prec == "bf16")
            dt = (time.perf_counter() - t) / args.steps
            tps = args.batch * args.seq_len / dt
            row = {
                "model": kind, "precision": prec, "params": num_parameters(model),
                "tokens_per_s": round(tps), "step_s": round(dt, 3),
                "mfu": round(tps * flops / (peaks[prec] * 1e9), 3), "loss_after": round(loss, 3),
            }  # fmt: skip
            log.info("%s", row)
            rows.append(row)
    by = {(r["model"], r["precision"]): r["tokens_per_s"] for r in rows}
    return {
        "matmul_peak_gflops": {k: round(v) for k, v in peaks.items()},
        "flops_per_token": flops, "batch": args.batch, "seq_len": args.seq_len, "rows": rows,
        "aurl_over_xtransformers": {p: round(by[("aurl", p)] / by[("x-transformers", p)], 2) for p in ("fp32", "bf16")},
        "bf16_over_fp32_aurl": round(by[("aurl", "bf16")] / by[("aurl", "fp32")], 2),
    }  # fmt: skip


def train_for(kind: str, data_dir: Path, minutes: float, args: argparse.Namespace) -> dict:
    """Train ``kind`` on ``data_dir``'s train split for ``minutes``; test-split figures."""
    from aurl.data.dataset import PreparedData, WindowDataset
    from aurl.evaluation.likelihood import split_likelihood

    data = PreparedData(data_dir)
    tok = data.tokenizer
    cfg = model_cfg(tok.vocab_size, args.seq_len)
    model = make(kind, cfg)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=args.lr, betas=(0.9, 0.95))
    ds = WindowDataset(data.split("train"), args.seq_len, seed=0, batch_size=args.batch)
    budget, step, t0, bf16 = minutes * 60, 0, time.perf_counter(), args.precision == "bf16"
    # cosine over the expected number of steps, re-estimated from the measured step time
    expected = None
    model.train()
    while time.perf_counter() - t0 < budget:
        if step == 5:
            expected = int(budget / ((time.perf_counter() - t0) / 5))
        for gp in opt.param_groups:
            gp["lr"] = args.lr * lr_factor(step, 20, expected or 10**6, 0.1)
        batch = torch.stack([ds[step * args.batch + b] for b in range(args.batch)])  # (B, T+1)
        loss = train_step(model, opt, batch, bf16)
        step += 1
    train_s = time.perf_counter() - t0
    model.eval()
    figures = split_likelihood(model, data.split("test"), tok, args.seq_len, batch_size=8)
    row = {
        "model": kind, "params": num_parameters(model), "data": str(data_dir),
        "tokenizer": tok.cfg.kind, "bpe": tok.is_trained,
        "vocab": tok.vocab_size, "steps": step, "train_minutes": round(train_s / 60, 2),
        "last_train_loss": round(loss, 3), "test_nll_per_token": round(figures["nll_per_token"], 4),
        "test_bits_per_note": round(figures["bits_per_note"], 3),
    }  # fmt: skip
    log.info("%s", row)
    return row


def part_quality(args: argparse.Namespace) -> dict:
    if args.data is None:
        raise SystemExit("--part quality needs --data PREPARED_DIR")
    rows = [train_for(k, args.data, args.minutes, args) for k in ("aurl", "x-transformers")]
    return {"minutes_each": args.minutes, "precision": args.precision, "rows": rows}


def part_tokenizers(args: argparse.Namespace) -> dict:
    if not args.dirs:
        raise SystemExit("--part tokenizers needs prepared directories as arguments")
    rows = [train_for("aurl", Path(d), args.minutes, args) for d in args.dirs]
    return {"minutes_each": args.minutes, "precision": args.precision, "rows": rows}


def to_markdown(results: dict) -> str:
    out = ["# Training benchmarks (benchmarks/bench_train.py)", ""]
    for part, res in results.items():
        out += [f"## {part}", "", f"`{res['command']}` — {res['when']}", ""]
        rows = res["rows"]
        keys = list(rows[0])
        out += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
        extra = {k: v for k, v in res.items() if k not in ("rows", "command", "when")}
        out += ["", "```", json.dumps(extra, indent=1), "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["speed", "quality", "tokenizers"], required=True)
    p.add_argument("--data", type=Path, help="prepared directory (quality)")
    p.add_argument("dirs", nargs="*", help="prepared directories (tokenizers)")
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time per model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=4, help="timed steps per speed row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--out", type=Path, default=RESULTS / "train.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res = {"speed": part_speed, "quality": part_quality, "tokenizers": part_tokenizers}[args.part](
        args
    )
    res["command"] = "python benchmarks/bench_train.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    res["when"] = (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads, "
        + f"load average {os.getloadavg()[0]:.1f} at the end (other jobs share these cores)"
    )
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.part] = res
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), to_markdown(results))
    print(to_markdown({args.part: res}))
    return 0 if all(math.isfinite(r.get("tokens_per_s", 0)) for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
