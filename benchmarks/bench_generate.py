"""Decoding speed: Aurl's sampler vs x-transformers' cached ``generate``, same model size, one run.

    .venv/bin/python benchmarks/bench_generate.py --tokens 256   # ~5 minutes on 2 shared cores
    .venv/bin/python benchmarks/bench_generate.py --quick     # smoke run

Model: the shipped bundle (``--model``, default models/bach_small) when present, else random
weights of the bach_small shape (``configs/bach_small.yaml`` if present, else d=256, 6 layers,
8 heads, d_ff=1024 as in benchmarks/bench_attention.py) with the default MIDILike tokenizer.
The x-transformers baseline is ``TransformerWrapper(Decoder(..., attn_flash=True, rotary_pos_emb=
True))`` of the same width/depth/heads/vocabulary in ``AutoregressiveWrapper.generate(cache_kv=True)``
(FACTS.md measured it at 127-148 tokens/s at batch 1). Both decode N tokens after a BOS with top-p
sampling at the same torch thread count (``--threads``, default 1: per-token work is a chain of tiny
ops, and on this shared 2-core box 2 threads cost 3-4x; see bench_attention.py).

Each case runs ``--reps`` times, interleaved with the others, and the fastest run is reported
(all runs are kept in the JSON): the machine is shared and its load drifts within a run.
Measured: tokens/s at batch 1 and 16 (Aurl plain, Aurl with the grammar constraint, x-transformers),
the ratio, seconds of music per second of compute (grammar run: beats at 96 BPM), and the wall time
of one 3-minute piece (``--seconds 180`` through ``aurl.generation.pipeline.generate``).
Results: benchmarks/results/generate.json + a Markdown table (printed and written beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from aurl.config import ModelConfig, RunConfig, TokenizerConfig, atomic_write_text, load_config
from aurl.generation import constraints as C
from aurl.generation.sample import StopRule, sample

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "generate.json"
BACH_TOKENS_PER_S = 30
"""A Bach chorale is ~30 tokens per second of music (FACTS.md)."""


def aurl_model(model_path: Path):
    """(model, tokenizer, description): the shipped bundle, else random weights of bach_small's shape."""
    from aurl.bundle import load_bundle
    from aurl.data.tokenizers import MusicTokenizer
    from aurl.models import build_model

    if model_path.exists():
        b = load_bundle(model_path)
        return b.model, b.tokenizer, f"bundle {model_path}", b.config
    preset = REPO / "configs" / "bach_small.yaml"
    cfg = load_config(preset) if preset.is_file() else RunConfig(tokenizer=TokenizerConfig())
    tok = MusicTokenizer(cfg.tokenizer)
    shape = (
        cfg.model
        if preset.is_file()
        else ModelConfig(d_model=256, n_layers=6, n_heads=8, d_ff=1024)
    )
    mcfg = ModelConfig(**{**shape.__dict__, "vocab_size": tok.vocab_size, "dropout": 0.0})
    torch.manual_seed(0)
    cfg = RunConfig(tokenizer=tok.cfg, model=mcfg, data=cfg.data)
    src = "configs/bach_small.yaml" if preset.is_file() else "d=256 L=6 H=8 d_ff=1024"
    return build_model(mcfg).eval(), tok, f"random weights, {src}", cfg


def xt_model(mcfg: ModelConfig):
    from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

    net = TransformerWrapper(
        num_tokens=mcfg.vocab_size, max_seq_len=mcfg.max_seq_len,
        attn_layers=Decoder(dim=mcfg.d_model, depth=mcfg.n_layers, heads=mcfg.n_heads,
                            attn_flash=True, rotary_pos_emb=True, ff_mult=mcfg.d_ff / mcfg.d_model),
    )  # fmt: skip
    return AutoregressiveWrapper(net).eval()


def time_aurl(model, tok, batch: int, n: int, grammar: bool) -> dict:
    vocab = C.Vocab.from_tokenizer(tok)
    cons = C.ConstraintSet(vocab) if grammar else None
    eos = tok.eos_id if grammar else -1  # plain run: never stop early, exactly n tokens per row
    t0 = time.perf_counter()
    rows = sample(model, [tok.bos_id], num=batch, rule=StopRule(eos, n), filters={"top_p": 0.95},
                  constraints=cons, seeds=range(batch), threads=None)  # fmt: skip
    dt = time.perf_counter() - t0
    tokens = sum(map(len, rows))
    out = {
        "batch": batch,
        "tokens": tokens,
        "seconds": round(dt, 3),
        "tokens_per_s": round(tokens / dt, 1),
    }
    if grammar:
        beats = sum(C.replay([tok.bos_id, *r], vocab).time for r in rows)
        out["music_s_per_compute_s"] = round(beats * 60 / 96.0 / dt, 2)
        out["tokens_per_beat"] = round(tokens / max(beats, 1e-9), 1)
    return out


@torch.inference_mode()
def time_xt(wrapper, bos: int, batch: int, n: int) -> dict:
    from x_transformers.autoregressive_wrapper import top_p

    prompt = torch.full((batch, 1), bos, dtype=torch.long)
    t0 = time.perf_counter()
    out = wrapper.generate(
        prompt, n, filter_logits_fn=top_p, filter_kwargs={"thres": 0.95}, cache_kv=True
    )
    dt = time.perf_counter() - t0
    tokens = out.numel()
    return {
        "batch": batch,
        "tokens": tokens,
        "seconds": round(dt, 3),
        "tokens_per_s": round(tokens / dt, 1),
    }


def three_minutes(model, tok, cfg, model_desc: str) -> dict:
    from types import SimpleNamespace

    from aurl.generation.pipeline import generate

    bundle = SimpleNamespace(model=model, tokenizer=tok, config=cfg, path=model_desc)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = generate(bundle, out=tmp, num=1, seconds=180.0, wav=False, musicxml=False, png=False)
        dt = time.perf_counter() - t0
    p = s.pieces[0]
    return {"wall_s": round(dt, 2), "music_s": round(p.seconds, 1), "new_tokens": p.new_tokens,
            "notes": p.notes, "beats": round(p.beats, 2)}  # fmt: skip


def markdown(r: dict) -> str:
    lines = [f"`{r['command']}`", "", f"model: {r['model']}; torch threads {r['threads']}; load average at start {r['load_avg']}", "",
             "| decoder | batch | tokens/s (best) | vs x-transformers | all runs |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for b in ("1", "16"):
        xt = r["x_transformers"][b]["tokens_per_s"]
        for name in ("aurl", "aurl_grammar", "x_transformers"):
            tps = r[name][b]["tokens_per_s"]
            runs = ", ".join(f"{x:.0f}" for x in r[name][b].get("all_tokens_per_s", [tps]))
            lines.append(f"| {name} | {b} | {tps:.0f} | {tps / xt:.2f}x | {runs} |")
    g = r["aurl_grammar"]["1"]
    lines += ["", f"seconds of music per second of compute (batch 1, grammar, 96 BPM): {g['music_s_per_compute_s']}",
              f"real-time factor at Bach's ~{BACH_TOKENS_PER_S} tokens per second of music: {r['aurl']['1']['tokens_per_s'] / BACH_TOKENS_PER_S:.1f}x"]  # fmt: skip
    bach_tokens = 180 * BACH_TOKENS_PER_S
    lines.append(
        f"3 minutes at Bach's token density ({bach_tokens} tokens, estimate from the batch-1 rate): "
        f"{bach_tokens / r['aurl']['1']['tokens_per_s']:.0f} s"
    )
    if "three_minutes" in r:
        t = r["three_minutes"]
        lines.append(f"3-minute piece (`--seconds 180`, this model): {t['wall_s']} s wall for {t['new_tokens']} "
                     f"tokens, {t['notes']} notes, {t['music_s']} s of music")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "bach_small")
    ap.add_argument("--tokens", type=int, default=512, help="new tokens per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--reps", type=int, default=3, help="interleaved repetitions; the best is reported"
    )
    ap.add_argument("--quick", action="store_true", help="64 tokens, no 3-minute piece")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = 64 if args.quick else args.tokens
    model, tok, desc, cfg = aurl_model(args.model)
    xt = xt_model(model.cfg)
    r: dict = {"command": "python " + " ".join(sys.argv), "model": desc, "threads": args.threads,
               "load_avg": round(os.getloadavg()[0], 2), "new_tokens": n, "torch": torch.__version__,
               "aurl": {}, "aurl_grammar": {}, "x_transformers": {}}  # fmt: skip
    for batch in (1, 16):
        time_aurl(model, tok, batch, 8, grammar=False)  # warm-up
        time_xt(xt, tok.bos_id, batch, 8)
        runs: dict[str, list[dict]] = {"aurl": [], "aurl_grammar": [], "x_transformers": []}
        for _ in range(args.reps):  # interleaved, best of reps: the shared machine's load drifts
            runs["aurl"].append(time_aurl(model, tok, batch, n, grammar=False))
            runs["x_transformers"].append(time_xt(xt, tok.bos_id, batch, n))
            runs["aurl_grammar"].append(time_aurl(model, tok, batch, n, grammar=True))
        for name, results in runs.items():
            best = max(results, key=lambda x: x["tokens_per_s"])
            r[name][str(batch)] = best | {"all_tokens_per_s": [x["tokens_per_s"] for x in results]}
        print(
            batch,
            {
                k: v[str(batch)]["all_tokens_per_s"]
                for k, v in r.items()
                if isinstance(v, dict) and str(batch) in v
            },
            file=sys.stderr,
        )
    if not args.quick:
        r["three_minutes"] = three_minutes(model, tok, cfg, desc)
    atomic_write_text(args.out, json.dumps(r, indent=1) + "\n")
    table = markdown(r)
    atomic_write_text(args.out.with_suffix(".md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
