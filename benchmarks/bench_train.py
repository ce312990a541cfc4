"""Training benchmarks: speed vs x-transformers, quality at equal wall time, tokenizer comparison.

    python benchmarks/bench_train.py --part speed
    python benchmarks/bench_train.py --part quality --data data/bach --minutes 5
    python benchmarks/bench_train.py --part tokenizers --minutes 3 data/bach_midilike data/bach_remi ...
    python benchmarks/bench_train.py --part ablate --data data/bach --minutes 2 \
        --variant aurl=aurl --variant std05=aurl:init_std=0.05 --variant xt=x-transformers

(a) speed: training tokens/s of Aurl's MusicTransformer and of ``x_transformers.TransformerWrapper(
    Decoder(..., attn_flash=True))`` of the same shape (~6.4M parameters), batch 8 x 512, fp32 and
    bf16 autocast, in one process; MFU against the matmul peak measured here (2048^2 matmuls).
(b) quality: both trained the same wall time on the same prepared split; test bits per note with
    ``aurl.evaluation.likelihood.split_likelihood`` (every test token predicted once).
(c) tokenizers: Aurl's model trained the same wall time on each prepared directory given; bits per
    note on its test split (comparable across tokenizations; bits per token is not).
(d) ablate: like quality, for any list of ``--variant label=kind:field=value,...`` (ModelConfig
    fields and lr), kept under its own key.

Models compared in one run are trained *interleaved* (the one with the least step time so far steps
next) until each has spent ``--minutes`` of its own step time, so load from other jobs slows them
alike. ``--seeds`` repeats the run per seed; ``--save-dir`` keeps each Aurl model as a bundle for
``aurl generate --model``.

Results merge into benchmarks/results/train.json and a Markdown table train.md (with the command).
"""

from __future__ import annotations

import argparse
import contextlib
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


def make(kind: str, cfg: ModelConfig, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg) if kind == "aurl" else XTransformer(cfg)


def parse_variant(text: str) -> tuple[str, str, dict, float | None]:
    """``label=kind[:key=value,...]``: kind aurl or x-transformers; keys are ModelConfig fields
    (ints, floats, true/false) plus ``lr``. ``aurl-untied=aurl:tie_weights=false,lr=2e-3``."""
    label, _, rest = text.partition("=")
    kind, _, opts = (rest or label).partition(":")
    if kind not in ("aurl", "x-transformers"):
        raise SystemExit(f"variant {text!r}: kind must be aurl or x-transformers, not {kind!r}")
    overrides: dict = {}
    lr = None
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        low = value.lower()
        val: object = low == "true" if low in ("true", "false") else value
        if isinstance(val, str):
            with contextlib.suppress(ValueError):
                val = float(val) if any(c in val for c in ".e") else int(val)
        if key == "lr":
            lr = float(val)  # type: ignore[arg-type]
        else:
            overrides[key] = val
    return label, kind, overrides, lr


def model_cfg(vocab: int, seq_len: int, **overrides) -> ModelConfig:
    return ModelConfig(
        **{"vocab_size": vocab, "max_seq_len": seq_len, "dropout": 0.0, **SHAPE, **overrides}
    )


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


class Entry:
    """One model trained in :func:`train_together`: its data, optimizer, schedule and clock."""

    def __init__(self, label: str, kind: str, data_dir: Path, overrides: dict, lr: float,
                 seed: int, args: argparse.Namespace) -> None:  # fmt: skip
        from aurl.data.dataset import PreparedData, WindowDataset

        self.label, self.kind, self.data_dir, self.lr, self.seed = label, kind, data_dir, lr, seed
        self.data = PreparedData(data_dir)
        self.cfg = model_cfg(self.data.tokenizer.vocab_size, args.seq_len, **overrides)
        self.overrides = overrides
        self.model = make(kind, self.cfg, seed)
        self.opt = torch.optim.AdamW(param_groups(self.model, 0.1), lr=lr, betas=(0.9, 0.95))
        self.ds = WindowDataset(
            self.data.split("train"), args.seq_len, seed=seed, batch_size=args.batch
        )
        self.step, self.clock, self.loss, self.expected = 0, 0.0, float("nan"), None

    def train_step(self, args: argparse.Namespace, budget: float) -> None:
        t = time.perf_counter()
        if self.step == 5:  # cosine over the steps the budget allows, from the measured step time
            self.expected = int(budget / (self.clock / 5))
        for gp in self.opt.param_groups:
            gp["lr"] = self.lr * lr_factor(self.step, 20, self.expected or 10**6, 0.1)
        b = args.batch
        batch = torch.stack([self.ds[self.step * b + i] for i in range(b)])  # (B, T+1)
        self.model.train()
        self.loss = train_step(self.model, self.opt, batch, args.precision == "bf16")
        self.step += 1
        self.clock += time.perf_counter() - t


def train_together(entries: list[Entry], minutes: float, args: argparse.Namespace) -> list[dict]:
    """Train every entry for ``minutes`` of its own step time, interleaved: the entry with the
    least time so far steps next. Other load on the machine then slows all entries alike, where
    back-to-back runs would give one model a quiet machine and the next a busy one."""
    from aurl.evaluation.likelihood import split_likelihood

    budget = minutes * 60
    t0 = time.perf_counter()
    while True:
        live = [e for e in entries if e.clock < budget]
        if not live:
            break
        e = min(live, key=lambda e: e.clock)
        e.train_step(args, budget)
        if e.step % 50 == 0:
            log.info("%s step %d loss %.3f (%.1f of %.1f min)", e.label, e.step, e.loss,
                     e.clock / 60, minutes)  # fmt: skip
    wall = time.perf_counter() - t0
    rows = []
    for e in entries:
        e.model.eval()
        tok = e.data.tokenizer
        figures = split_likelihood(e.model, e.data.split("test"), tok, args.seq_len, batch_size=8)
        row = {
            "model": e.label, "kind": e.kind, "seed": e.seed, "params": num_parameters(e.model),
            "data": str(e.data_dir), "tokenizer": tok.cfg.kind, "bpe": tok.is_trained,
            "vocab": tok.vocab_size, "lr": e.lr, "overrides": e.overrides or "-", "steps": e.step,
            "train_minutes": round(e.clock / 60, 2), "last_train_loss": round(e.loss, 3),
            "test_nll_per_token": round(figures["nll_per_token"], 4),
            "test_bits_per_note": round(figures["bits_per_note"], 3),
        }  # fmt: skip
        log.info("%s", row)
        rows.append(row)
        if args.save_dir and e.kind == "aurl":
            save_as_bundle(e, args.save_dir / f"{e.label}_seed{e.seed}")
    log.info("trained %d models together in %.1f min wall", len(entries), wall / 60)
    return rows


def save_as_bundle(e: Entry, out: Path) -> None:
    """A model bundle (``aurl generate --model OUT``) with the corpus's generation defaults."""
    import dataclasses

    from aurl.bundle import save_bundle
    from aurl.config import DataConfig, RunConfig
    from aurl.training.run import corpus_sample_defaults

    tok = e.data.tokenizer
    cfg = RunConfig(
        name=out.name, tokenizer=tok.cfg, data=DataConfig(path=str(e.data_dir)), model=e.cfg
    )
    cfg = dataclasses.replace(cfg, sample=corpus_sample_defaults(cfg, tok))
    save_bundle(out, e.model, cfg, tok)


def entries_for(variants: list[str], data_dir: Path, seed: int, args) -> list[Entry]:
    out = []
    for text in variants:
        label, kind, overrides, lr = parse_variant(text)
        out.append(Entry(label, kind, data_dir, overrides, lr or args.lr, seed, args))
    return out


def part_quality(args: argparse.Namespace) -> dict:
    """Aurl against x-transformers (or any ``--variant`` list), trained together per seed."""
    if args.data is None:
        raise SystemExit("--part quality needs --data PREPARED_DIR")
    variants = args.variant or ["aurl=aurl", "x-transformers=x-transformers"]
    rows = []
    for seed in args.seeds:
        rows += train_together(entries_for(variants, args.data, seed, args), args.minutes, args)
    return {"minutes_each": args.minutes, "precision": args.precision, "seeds": args.seeds,
            "variants": variants, "rows": rows}  # fmt: skip


def part_ablate(args: argparse.Namespace) -> dict:
    """Like quality, under its own key, so ablations do not overwrite the headline table."""
    return part_quality(args)


def part_tokenizers(args: argparse.Namespace) -> dict:
    if not args.dirs:
        raise SystemExit("--part tokenizers needs prepared directories as arguments")
    rows = []
    for seed in args.seeds:
        entries = [Entry(Path(d).name, "aurl", Path(d), {}, args.lr, seed, args) for d in args.dirs]
        rows += train_together(entries, args.minutes, args)
    return {
        "minutes_each": args.minutes,
        "precision": args.precision,
        "seeds": args.seeds,
        "rows": rows,
    }


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
    p.add_argument("--part", choices=["speed", "quality", "ablate", "tokenizers"], required=True)
    p.add_argument("--data", type=Path, help="prepared directory (quality)")
    p.add_argument("dirs", nargs="*", help="prepared directories (tokenizers)")
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time per model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=4, help="timed steps per speed row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one training run per seed")
    p.add_argument(
        "--variant", action="append", help="label=kind[:field=value,...] (quality/ablate)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--save-dir", type=Path, help="keep each trained model here (LABEL_seedS.pt)")
    p.add_argument("--out", type=Path, default=RESULTS / "train.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    parts = {"speed": part_speed, "quality": part_quality, "ablate": part_ablate,
             "tokenizers": part_tokenizers}  # fmt: skip
    res = parts[args.part](args)
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
