"""Run directory -> inference bundle (``aurl export RUN --out DIR``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aurl.bundle import load_checkpoint_model, save_bundle

log = logging.getLogger(__name__)


def model_card(cfg, checkpoint: Path, extra: dict | None = None) -> str:
    """A short Markdown card: what the model is, where it came from, how to use it."""
    m = cfg.model
    lines = [
        f"# {cfg.name}",
        "",
        f"- mode: {m.mode}; {m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads, "
        f"context {m.max_seq_len}, attention {m.attention}, positions {m.position}",
        f"- tokenizer: {cfg.tokenizer.kind}, vocabulary {m.vocab_size}",
        f"- trained on: {cfg.data.path} (windows of {cfg.data.seq_len} tokens)",
        f"- exported from: {checkpoint}",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "Generate with `aurl generate --model THIS_DIR --out samples/`."]
    return "\n".join(lines) + "\n"


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    which: str = "best",
    weights_dtype: str = "float32",
) -> Path:
    """Write the bundle of ``run_dir``'s ``checkpoints/{which}.ckpt`` into ``out``.

    ``which="best"`` falls back to ``last`` when the run never validated (with a warning).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which={which!r}; choose best or last")
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / f"{which}.ckpt"
    if not ckpt.is_file() and which == "best":
        fallback = run_dir / "checkpoints" / "last.ckpt"
        if fallback.is_file():
            log.warning("%s: no best.ckpt (no validation ran); exporting last.ckpt", run_dir)
            ckpt = fallback
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"{ckpt}: checkpoint not found; is {run_dir} a run directory of `aurl train`?"
        )
    bundle = load_checkpoint_model(ckpt)
    from aurl.models import num_parameters

    card = model_card(bundle.config, ckpt, {"parameters": f"{num_parameters(bundle.model):,}"})
    return save_bundle(
        out, bundle.model, bundle.config, bundle.tokenizer, card=card, weights_dtype=weights_dtype
    )
