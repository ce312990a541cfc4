"""LightningModule for the language-model objective: next-token cross-entropy over music tokens.

Shape legend
  B  batch    T  window length (tokens fed to the model)    V  vocabulary

A training batch is a window of ``T + 1`` ids per row (B, T+1), or an ``(inputs, targets)`` pair of
(B, T) tensors; inputs are the first T ids and targets the same ids shifted by one. The loss comes
from the model (mean cross-entropy ignoring PAD = 0). The anomaly guard inspects the gradient norm
once per optimizer step and drops the update when it is non-finite or spiking.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from aurl.config import RunConfig, to_dict
from aurl.training.callbacks import AnomalyGuard

log = logging.getLogger(__name__)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer ``step``: linear warmup then cosine.

    Warmup rises from 1/warmup to 1 over ``warmup_steps``; the cosine then falls to
    ``min_lr_ratio`` at ``total_steps`` and stays there (Loshchilov & Hutter 2017, as in GPT-3).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matmul weights only; none on norms, biases and embeddings.

    Embedding rows are looked up, not multiplied, so decay only shrinks rare tokens toward zero
    (nanoGPT and minGPT exclude them the same way). A tied output projection shares the embedding
    tensor and so is not decayed either; ``named_parameters`` yields a shared tensor once.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, keep = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (keep if p.dim() < 2 or id(p) in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def split_batch(batch: Tensor | tuple | list) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (B, T), from a (B, T+1) window tensor or an (inputs, targets) pair."""
    if isinstance(batch, (tuple, list)):
        inputs, targets = batch[0], batch[1]
    elif isinstance(batch, dict):
        inputs, targets = batch["inputs"], batch["targets"]
    else:
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
    return inputs.long(), targets.long()


class LMModule(pl.LightningModule):
    """Trains ``build_model(cfg.model)`` as a next-token language model."""

    def __init__(self, cfg: RunConfig, vocab_size: int) -> None:
        super().__init__()
        from aurl.models import build_model

        if vocab_size <= 0:
            raise ValueError(f"vocab_size={vocab_size} must be > 0 (take it from the tokenizer)")
        if cfg.model.vocab_size not in (0, vocab_size):
            raise ValueError(
                f"model.vocab_size={cfg.model.vocab_size} does not match the tokenizer's {vocab_size}; "
                "leave model.vocab_size at 0 to take it from the tokenizer"
            )
        self.cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size)
        )
        self.model = build_model(self.cfg.model)
        self.max_seq_len = self.cfg.model.max_seq_len
        self.guard = AnomalyGuard(cfg.trainer.max_bad_steps)
        self.last_batch_tokens = 0
        self.skipped_steps = 0

    # -- steps ----------------------------------------------------------------------------------

    def forward(self, tokens: Tensor, targets: Tensor | None = None):
        return self.model(tokens, targets)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, targets = split_batch(batch)
        out = self.model(inputs, targets)
        self.last_batch_tokens = int((targets != 0).sum())
        loss = out.loss
        if not torch.isfinite(loss):
            # Keep going: backward makes the gradients non-finite and the guard, which sees the
            # all-reduced gradients on every rank alike, skips the optimizer step.
            log.warning("step %d: non-finite training loss %s", self.global_step, float(loss))
        else:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        # Pre-clip global L2 norm; Lightning clips after this hook.
        norm = float(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
            )
        )
        ok = self.guard.check(norm, self.global_step)
        if ok:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
            return
        # Drop the update: AdamW leaves parameters whose grad is None untouched (no momentum, no
        # weight decay), so the weights stay exactly as after the last good step.
        self.skipped_steps += 1
        for p in self.parameters():
            p.grad = None
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        inputs, targets = split_batch(batch)
        loss = self.model(inputs, targets).loss
        self.log("val/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    # -- optimizer ------------------------------------------------------------------------------

    def configure_optimizers(self):
        o = self.cfg.optim
        fused = torch.cuda.is_available() and next(self.parameters()).is_cuda
        opt = torch.optim.AdamW(
            param_groups(self.model, o.weight_decay), lr=o.lr, betas=o.betas, fused=fused or None
        )
        total = self.cfg.trainer.max_steps

        def factor(step: int) -> float:
            return lr_factor(step, o.warmup_steps, total, o.min_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoint contents: plain values only (loaded with weights_only=True) -----------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aurl_config"] = to_dict(self.cfg)
        checkpoint["aurl_guard"] = {
            "history": list(self.guard.history),
            "skipped_steps": self.skipped_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("aurl_guard")
        if state:
            self.guard.history.extend(float(x) for x in state["history"])
            self.skipped_steps = int(state["skipped_steps"])
