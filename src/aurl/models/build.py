"""Build a model from its config, count its parameters, estimate its FLOPs per token."""

from __future__ import annotations

import logging

from torch import nn

from aurl.config import ModelConfig
from aurl.models.blocks import swiglu_hidden
from aurl.models.transformer import MusicTransformer

log = logging.getLogger(__name__)


def build_model(cfg: ModelConfig) -> MusicTransformer:
    """The language model described by ``cfg`` (``cfg.vocab_size`` must be set)."""
    model = MusicTransformer(cfg)
    log.info(
        "built MusicTransformer: %d parameters, %d layers, d_model=%d, attention=%s, position=%s",
        num_parameters(model), cfg.n_layers, cfg.d_model, cfg.attention, cfg.position,
    )  # fmt: skip
    return model


def num_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters of ``model``, each shared tensor (tied embeddings) counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def attended_keys(cfg: ModelConfig, seq_len: int) -> float:
    """Mean number of keys a query attends to over a causal window of ``seq_len`` tokens."""
    full = (seq_len + 1) / 2
    if cfg.attention == "full":
        return full
    W = min(cfg.window, seq_len)
    # causal band: the first W queries see 1..W keys, the rest W each
    local = (W * (W + 1) / 2 + (seq_len - W) * W) / seq_len
    if cfg.attention == "sliding_window":
        return local
    # hierarchical: plus the summaries of blocks ending before the window (about (t - W) / stride)
    beyond = max(seq_len - W, 0)
    return local + (beyond * (beyond + 1) / 2) / cfg.global_stride / seq_len


def estimate_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward) for MFU, after Kaplan et al. 2020 / PaLM:
    ``6·N`` for the weight matmuls plus ``12·L·C·K`` for attention scores and values, where K is
    the mean number of keys a query attends to (causal masking and windows counted, unlike
    nanoGPT's ``12·L·C·T`` which counts the masked half). N excludes learned position embeddings
    (a lookup, no matmul); the tied token embedding is counted once, as the output projection.
    """
    T = seq_len or cfg.max_seq_len
    C, L, V, F = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.d_ff
    mlp = 3 * C * swiglu_hidden(F) if cfg.mlp == "swiglu" else 2 * C * F
    n_matmul = L * (4 * C * C + mlp) + V * C
    return 6.0 * n_matmul + 12.0 * L * C * attended_keys(cfg, T)
