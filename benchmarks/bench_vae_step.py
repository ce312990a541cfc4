"""Seconds per VAE training step with 1 vs 2 torch threads (issue 13: shared, oversubscribed CPUs).

    python benchmarks/bench_vae_step.py data/bach --config configs/bach_vae_conductor.yaml

One batch of ``optim.batch_size`` segments, forward + backward + AdamW outside Lightning, repeated;
the median of the steps after the first is reported per thread count, beside the load average.
Writes ``benchmarks/results/vae_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from aurl.config import atomic_write_text, load_config
from aurl.training.vae_module import VAEModule, open_segment_data, trim_batch

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(module: VAEModule, batch: dict, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        _, terms = module.vae_terms(batch)
        loss = terms["recon"] + terms["kl_penalized"] + terms.get("bow", 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    rest = sorted(times[1:])
    return rest[len(rest) // 2]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("data", type=Path)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "bach_vae_conductor.yaml")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vae_step.json")
    args = p.parse_args()
    print(f"python {shlex.join(sys.argv)}")
    cfg = load_config(args.config, [f"data.path={args.data}"])
    tok, train, _ = open_segment_data(cfg)
    torch.manual_seed(0)
    module = VAEModule(cfg, tok.vocab_size)
    batch = trim_batch(next(iter(DataLoader(train, batch_size=cfg.optim.batch_size))))
    rows = []
    for _ in range(args.repeats):
        for threads in (1, 2):
            s = step_seconds(module, batch, threads, args.steps)
            rows.append({"threads": threads, "s_per_step": round(s, 3), "loadavg": os.getloadavg()})
            print(f"threads {threads}: {s:.3f} s/step  (load {os.getloadavg()[0]:.1f})")
    blob = {"command": f"python {shlex.join(sys.argv)}", "config": str(args.config), "rows": rows}
    atomic_write_text(args.out, json.dumps(blob, indent=2) + "\n")


if __name__ == "__main__":
    main()
