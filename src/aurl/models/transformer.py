"""MusicTransformer: a decoder-only language model over music tokens (nanoGPT-shaped).

Shape legend
  B  batch                 T  token positions in this call       V  vocabulary
  P  prefix positions      C  model width (d_model)              D  head width (C // n_heads)

tokens (B, T) -> embeddings (B, T, C) [+ prefix (B, P, C) in front] -> n_layers pre-norm blocks
-> final norm -> hidden (B, T, C) -> tied output projection -> logits (B, T, V).
Positions are rotary by default (relative by construction), or learned absolute embeddings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aurl.config import ModelConfig
from aurl.models.blocks import KVCache, Rotary, make_block, make_norm

log = logging.getLogger(__name__)

PAD_ID = 0
"""Targets equal to this id are ignored by the loss (the tokenizer's PAD)."""

LOGITS_FOR = ("all", "last", "none")


@dataclass
class ModelOutput:
    """What :meth:`MusicTransformer.forward` returns."""

    logits: Tensor | None
    """(B, T, V) for ``logits_for="all"``, (B, 1, V) for ``"last"``, None for ``"none"``."""
    loss: Tensor | None
    """Mean cross-entropy over target positions that are not PAD; None without targets."""
    hidden: Tensor
    """(B, T, C) final-normed states of the token positions (prefix positions dropped)."""
    cache: KVCache | None
    """The cache passed in, advanced past this call's positions."""


class MusicTransformer(nn.Module):
    """Decoder-only transformer; see the module docstring for the data flow."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(
                f"model.vocab_size={cfg.vocab_size}; set it from the tokenizer (tokenizer.vocab_size) "
                "before building the model"
            )
        self.cfg = cfg
        C, V = cfg.d_model, cfg.vocab_size
        self.tok_emb = nn.Embedding(V, C)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, C) if cfg.position == "learned" else None
        self.rotary = Rotary(C // cfg.n_heads, cfg.max_seq_len) if cfg.position == "rope" else None
        self.blocks = nn.ModuleList(make_block(cfg, causal=True) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, C)
        self.lm_head = nn.Linear(C, V, bias=False)
        if cfg.tie_weights:
            # Press & Wolf 2017: one matrix for input and output embeddings (fewer parameters,
            # and every token's embedding gets a gradient at every step through the softmax).
            self.lm_head.weight = self.tok_emb.weight
        std = cfg.init_std or math.sqrt(2.0 / (5.0 * C))
        self.apply(lambda m: self._init_weights(m, std))
        # GPT-2: residual projections scaled by 1/sqrt(2·n_layers) so the residual stream's variance
        # does not grow with depth.
        residual_std = std / math.sqrt(2 * cfg.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module, std: float = 0.02) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` rows of up to ``max_len`` positions
        (default ``model.max_seq_len``), on the model's device and dtype unless given."""
        weight = self.tok_emb.weight
        cfg = self.cfg
        return KVCache(
            cfg.n_layers, batch_size, cfg.n_heads, max_len or cfg.max_seq_len, cfg.d_model // cfg.n_heads,
            device=device or weight.device, dtype=dtype or weight.dtype,
        )  # fmt: skip

    def forward(
        self,
        tokens: Tensor,
        targets: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        prefix: Tensor | None = None,
        key_mask: Tensor | None = None,
        logits_for: str = "all",
    ) -> ModelOutput:
        """Run the network on ``tokens`` (B, T) long.

        targets: (B, T) long; the loss ignores PAD (id 0). cache: continue from (and extend) a
        :class:`KVCache`. prefix: (B, P, C) embeddings placed before the tokens (VAE conditioning);
        outputs cover only the token positions. key_mask: (B, P+T) bool, False for padding keys.
        logits_for: ``"all"``, ``"last"`` (generation: project only the last position) or ``"none"``.
        """
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be a (B, T) long tensor, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        if logits_for not in LOGITS_FOR:
            raise ValueError(f"logits_for={logits_for!r}; choose one of {', '.join(LOGITS_FOR)}")
        if targets is not None and logits_for != "all":
            raise ValueError(
                f"targets need logits for all positions, got logits_for={logits_for!r}"
            )
        B, T = tokens.shape
        x = self.tok_emb(tokens)  # (B, T, C)
        P = 0
        if prefix is not None:
            if prefix.dim() != 3 or prefix.shape[0] != B or prefix.shape[2] != self.cfg.d_model:
                raise ValueError(
                    f"prefix must be (B={B}, P, C={self.cfg.d_model}), got {tuple(prefix.shape)}"
                )
            P = prefix.shape[1]
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # (B, P+T, C)
        length = P + T
        start = 0
        if cache is not None:
            if cache.batch_size != B:
                raise ValueError(f"cache holds batch {cache.batch_size} rows but tokens have {B}")
            cache.check_room(length)
            start = cache.position
            key_mask = cache.store_mask(key_mask, length)  # (B, S) or None
        if self.pos_emb is not None:
            if start + length > self.cfg.max_seq_len:
                raise ValueError(
                    f"learned positions end at model.max_seq_len={self.cfg.max_seq_len} but this call "
                    f"reaches position {start + length}; use position=rope to slide past the context"
                )
            x = x + self.pos_emb(
                torch.arange(start, start + length, device=x.device)
            )  # (B, P+T, C)
        rope = self.rotary(length, start) if self.rotary is not None else None  # (P+T, D) each
        if self.training and self.cfg.dropout > 0:
            x = F.dropout(x, self.cfg.dropout, training=True)
        for i, block in enumerate(self.blocks):
            x = block(x, rope=rope, key_mask=key_mask, cache=cache, layer=i)
        if cache is not None:
            cache.advance(length)
        hidden = self.norm(x[:, P:])  # (B, T, C)
        logits = loss = None
        if logits_for == "all":
            logits = self.lm_head(hidden)  # (B, T, V)
        elif logits_for == "last":
            logits = self.lm_head(hidden[:, -1:])  # (B, 1, V)
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=PAD_ID
            )  # (B·T, V) vs (B·T,)
        return ModelOutput(logits=logits, loss=loss, hidden=hidden, cache=cache)
