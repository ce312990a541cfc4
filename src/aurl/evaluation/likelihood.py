"""Held-out likelihood (``aurl evaluate``): NLL per token, per note and per token type.

Every token of the split after each piece's BOS is predicted exactly once: pieces are cut into
consecutive windows of the model's context (``aurl.data.dataset.eval_windows``), so a token's
context is the part of its window before it (up to ``model.max_seq_len - 1`` tokens).

Per-note figures are the comparable ones across tokenizers (a BPE or REMI stream spends a different
number of tokens per note) and across corpora where some token types are trivially predictable
(all Bach velocities are 91 in music21's export: FACTS.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aurl.config import atomic_write_text

log = logging.getLogger(__name__)

PAD_ID = 0


@torch.inference_mode()
def token_nll(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, targets), each (B, T), for a (B, T+1) window batch; nll is 0 where the target is PAD."""
    inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
    logits = model(inputs).logits.float()  # (B, T, V)
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")
    return nll, targets  # (B, T), (B, T)


def summarize(
    total_nll: float, tokens: int, notes: int, pieces: int, by_type: dict[str, tuple[int, float]]
) -> dict:
    """The reported figures from sums (pure; nats in, bits derived)."""
    if tokens == 0:
        raise ValueError("no tokens to evaluate (the split is empty)")
    nll = total_nll / tokens
    return {
        "nll_per_token": nll,
        "bits_per_token": nll / math.log(2),
        "perplexity": math.exp(nll),
        "bits_per_note": total_nll / math.log(2) / notes if notes else None,
        "tokens": tokens,
        "notes": notes,
        "pieces": pieces,
        "by_type": {
            name: {"tokens": n, "nll_per_token": s / n} for name, (n, s) in by_type.items() if n
        },
    }


def split_likelihood(
    model: torch.nn.Module, part, tokenizer, seq_len: int, batch_size: int = 8
) -> dict:
    """Figures of :func:`summarize` for one split (``SplitData``); ``model(x).logits`` is (B, T, V)."""
    from aurl.data.dataset import eval_batches
    from aurl.data.tokenizers import TOKEN_TYPES

    total, tokens = 0.0, 0
    sums = np.zeros(len(TOKEN_TYPES), dtype=np.float64)
    counts = np.zeros(len(TOKEN_TYPES), dtype=np.int64)
    for batch in eval_batches(part, seq_len, batch_size):
        nll, targets = token_nll(model, batch)
        mask = targets != PAD_ID
        nll_kept = nll[mask].double().numpy()
        types = tokenizer.token_type(targets[mask].numpy())
        total += float(nll_kept.sum())
        tokens += int(mask.sum())
        np.add.at(sums, types, nll_kept)
        np.add.at(counts, types, 1)
    result = summarize(
        total, tokens, int(part.num_notes), len(part),
        {name: (int(counts[i]), float(sums[i])) for i, name in enumerate(TOKEN_TYPES)},
    )  # fmt: skip
    result["context"] = seq_len
    return result


def evaluate(
    model_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    split: str = "test",
    json_path: str | os.PathLike | None = None,
    batch_size: int = 8,
) -> dict:
    """Likelihood of ``split`` of the prepared ``data_dir`` under the model (bundle or run dir)."""
    from aurl.bundle import load_bundle
    from aurl.data.dataset import PreparedData

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    bundle = load_bundle(model_path)
    data = PreparedData(data_dir)
    if bundle.config.model.mode != "transformer":
        # A VAE has no exact likelihood: report its reconstruction NLL and ELBO bound per note over
        # bar-aligned segments (vae_metrics documents why these differ from the LM's figures).
        from aurl.training.vae_metrics import vae_metrics

        result = vae_metrics(bundle, data, split, batch_size=batch_size)
        result.update(
            {"kind": "vae", "split": split, "model": str(model_path), "data": str(data_dir)}
        )
        if json_path is not None:
            atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")
        return result
    if data.tokenizer.hash != bundle.tokenizer.hash:
        raise ValueError(
            f"{data_dir} was tokenized with tokenizer {data.tokenizer.hash} but {model_path} expects "
            f"{bundle.tokenizer.hash}; prepare the data with the model's tokenizer settings"
        )
    part = data.split(split)
    if len(part) == 0:
        raise ValueError(f"{data_dir}: the {split} split has no pieces")
    result = split_likelihood(
        bundle.model, part, bundle.tokenizer, bundle.config.model.max_seq_len, batch_size
    )
    result.update({"kind": "lm", "split": split, "model": str(model_path), "data": str(data_dir)})
    log.info(
        "%s %s: %.4f nats/token, %.3f bits/note over %d tokens, %d notes",
        data_dir, split, result["nll_per_token"], result["bits_per_note"] or float("nan"),
        result["tokens"], result["notes"],
    )  # fmt: skip
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")
    return result
