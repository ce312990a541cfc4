"""LightningModule for the vae and vae_gan modes, their segment dataset, KL schedules and metrics.

Shape legend:
    B  batch    T  tokens per segment (BOS + K bars + EOS, padded)    V  vocabulary
    K  bars per segment    D / E  global / per-bar latent sizes

Objective (per token, so it sits on the same scale as the LM's ``train/loss``)::

    loss = recon + beta(step) * sum_dims max(KL_dim, free_bits) / tokens_per_segment
           [+ bow_weight * bag-of-notes NLL   (decoder=conductor)]
           [+ adv_weight * adv_g + feature_matching_weight * fm   (vae_gan, after gan_warmup_steps)]

``val/loss`` is the negative ELBO per token (beta = 1, no free bits), so it does not move with the
annealing schedule and early stopping/best checkpoints compare like with like.

VAE-GAN uses Lightning's manual optimization with two AdamW optimizers. The discriminator's step
goes through the raw torch optimizer so that ``global_step`` counts one step per batch (Lightning
counts every wrapped ``optimizer.step()``, which would halve ``max_steps`` for a GAN).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from aurl.config import RunConfig, VAEConfig, to_dict
from aurl.models.discriminator import (
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    r1_penalty,
    relaxed_tokens,
)
from aurl.models.grid_vae import GridOutput, GridVAE
from aurl.models.vae import (
    Latents,
    MusicVAE,
    VAEOutput,
    build_vae,
    cut_segments,
    pack_segment,
)
from aurl.training.module import lr_factor, param_groups

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# KL weight (pure)


def kl_weight(step: int, cfg: VAEConfig) -> float:
    """beta at optimizer ``step`` for the configured schedule.

    linear/cosine rise from 0 to beta over kl_warmup_steps; cyclical (Fu et al. 2019) repeats a
    cycle of 2 * kl_warmup_steps: a linear ramp over the first half (their R = 0.5), then beta.
    """
    w = max(1, cfg.kl_warmup_steps)
    if cfg.kl_schedule == "constant":
        return cfg.beta
    if cfg.kl_schedule == "linear":
        return cfg.beta * min(1.0, step / w)
    if cfg.kl_schedule == "cosine":
        return cfg.beta * 0.5 * (1.0 - math.cos(math.pi * min(1.0, step / w)))
    if cfg.kl_schedule == "cyclical":
        return cfg.beta * min(1.0, (step % (2 * w)) / w)
    raise ValueError(
        f"model.vae.kl_schedule={cfg.kl_schedule!r}; choose linear, cyclical, cosine or constant"
    )


def adapt_beta(beta: float, kl: float, target: float, rate: float) -> float:
    """One multiplicative controller step toward KL = target (nats per segment).

    beta grows when KL exceeds the target and shrinks below it; clamped to [1e-4, 1e3] so a
    transient spike cannot drive it to 0 or infinity.
    """
    step = rate * (kl - target) / max(target, 1e-6)
    return float(min(1e3, max(1e-4, beta * math.exp(max(-1.0, min(1.0, step))))))


def free_bits_kl(kl: Tensor, free_bits: float) -> Tensor:
    """Sum over dimensions of max(batch-mean KL per dimension, free_bits) (Kingma et al. 2016).

    kl: (B, ...) KL per latent dimension. Dimensions already under ``free_bits`` nats get no
    gradient, so the encoder is not pushed to collapse them onto the prior.
    """
    per_dim = kl.mean(0)  # (...)
    return per_dim.clamp_min(free_bits).sum()


def loss_terms(
    recon: Tensor, kl_g: Tensor, kl_b: Tensor | None, per_seg: Tensor, free_bits: float
) -> dict[str, Tensor]:
    """The named terms of both VAEs: ``recon`` per unit (token or note), KL per latent dimension
    (B, D) and (B, K, E) or None, ``per_seg`` units per segment (the KL's scale to per unit)."""
    g = kl_g.sum(-1).mean()  # nats per segment
    b = kl_b.sum((1, 2)).mean() if kl_b is not None else torch.zeros_like(g)
    fb = free_bits_kl(kl_g, free_bits)
    if kl_b is not None:
        fb = fb + free_bits_kl(kl_b, free_bits)
    return {
        "recon": recon,
        "kl": g + b,
        "kl_global": g,
        "kl_bar": b,
        "kl_penalized": fb / per_seg,
        "elbo_loss": recon + (g + b) / per_seg,
    }


# ---------------------------------------------------------------------------------------------
# segments cut on bar lines


def trim_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the columns that are padding in every row (B, T) -> (B, T').

    Rows are padded to the split's longest segment (up to ``data.seq_len``), but a 4-bar chorale
    segment averages 251 MIDILike tokens against 448 columns: cutting the all-PAD tail of each
    batch saves that share of the compute and changes no loss (PAD positions are ignored).
    """
    tokens = batch["tokens"]
    keep = int((tokens != 0).any(0).nonzero().max()) + 1 if tokens.numel() else 0
    return {name: value[:, :keep] for name, value in batch.items()}


def _split_pieces(prepared, split: str) -> list[np.ndarray]:
    part = prepared.split(split)
    get = part.piece if hasattr(part, "piece") else part.__getitem__
    return [np.asarray(get(i), dtype=np.int64) for i in range(len(part))]


class SegmentDataset(Dataset):
    """Segments of ``bars_per_segment`` bars from a split, as fixed-length padded rows.

    Item ``i`` is a pure function of ``(seed, i)``: index ``i`` maps to segment
    ``perm_{i // n}[i % n]`` with a permutation seeded by ``(seed, i // n)``, so the endless
    step-indexed sampler of ``aurl.training.run`` draws every segment once per pass, reproducibly.
    ``shuffle=False`` keeps the natural order (validation, metrics).
    """

    def __init__(
        self,
        pieces: list[np.ndarray],
        tokenizer,
        vcfg: VAEConfig,
        max_len: int,
        *,
        stride_bars: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.bos, self.eos, self.pad = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        special = {self.bos, self.eos, self.pad}
        stride = stride_bars or vcfg.bars_per_segment
        self.segments: list[tuple[np.ndarray, np.ndarray]] = []
        for ids in pieces:
            beats = np.asarray(tokenizer.token_beats(ids), dtype=np.float64)
            self.segments.extend(
                cut_segments(ids, beats, vcfg.bars_per_segment, vcfg.beats_per_bar, stride, special)
            )
        if not self.segments:
            raise ValueError(
                "no segments: the split has no tokens with timing; check the prepared data"
            )
        longest = max(len(s[0]) for s in self.segments) + 2
        self.length = min(max_len, longest)
        cut = sum(len(s[0]) + 2 > self.length for s in self.segments)
        if cut:
            log.info(
                "%d of %d segments truncated to %d tokens", cut, len(self.segments), self.length
            )
        self.seed, self.shuffle = seed, shuffle
        self.bars = vcfg.bars_per_segment

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        n = len(self.segments)
        j = i % n
        if self.shuffle:
            j = int(np.random.default_rng((self.seed, i // n)).permutation(n)[j])
        ids, bars = self.segments[j]
        tokens, bar_ids = pack_segment(
            ids, bars, self.bars, self.length, self.bos, self.eos, self.pad
        )
        return {"tokens": torch.from_numpy(tokens), "bar_ids": torch.from_numpy(bar_ids)}


def open_segment_data(cfg: RunConfig):
    """The prepared data of ``cfg.data.path`` as segment datasets: (tokenizer, train, val)."""
    from aurl.data import dataset

    path = Path(cfg.data.path)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{path}: not a prepared data directory (no manifest.json); run `aurl prepare`"
        )
    data = dataset.PreparedData(path)
    v = cfg.model.vae
    if v.decoder == "grid":
        from aurl.training.grid_data import RollDataset

        pieces = _split_pieces(data, "train")
        train = RollDataset(
            pieces, data.tokenizer, v, stride_bars=v.segment_stride_bars, seed=cfg.trainer.seed,
            augment=True,
        )  # fmt: skip
        val = RollDataset(_split_pieces(data, "val"), data.tokenizer, v, shuffle=False)
        log.info("grid VAE segments: %d train, %d val", len(train), len(val))
        return data.tokenizer, train, val
    train = SegmentDataset(
        _split_pieces(data, "train"), data.tokenizer, v, cfg.data.seq_len,
        stride_bars=v.segment_stride_bars, seed=cfg.trainer.seed,
    )  # fmt: skip
    val = SegmentDataset(
        _split_pieces(data, "val"), data.tokenizer, v, cfg.data.seq_len, shuffle=False
    )
    log.info("VAE segments: %d train, %d val (%d tokens each)", len(train), len(val), train.length)
    return data.tokenizer, train, val


# ---------------------------------------------------------------------------------------------
# the module


class VAEModule(pl.LightningModule):
    """Trains ``build_vae(cfg.model)``; adds the discriminator and manual optimization for vae_gan."""

    def __init__(self, cfg: RunConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size={vocab_size} must be > 0 (take it from the tokenizer)")
        if cfg.model.mode not in ("vae", "vae_gan"):
            raise ValueError(f"VAEModule needs model.mode vae or vae_gan, got {cfg.model.mode!r}")
        self.cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size)
        )
        self.vcfg = self.cfg.model.vae
        self.model: MusicVAE | GridVAE = build_vae(self.cfg.model)
        self.max_seq_len = self.cfg.model.max_seq_len
        self.gan = self.cfg.model.mode == "vae_gan"
        self.grid = self.vcfg.decoder == "grid"
        self._tokenizer = None  # grid mode: loaded on demand to turn monitoring samples into ids
        # The discriminator reads (B, T, V) one-hot rows: tokens, or with the grid one row per
        # time step of P pitches x 3 cell classes (off / onset / hold), windows in steps.
        d_vocab = self.model.pitches * 3 if self.grid else vocab_size
        self.discriminator = (
            MultiScaleDiscriminator(
                d_vocab, self.cfg.model.d_model, self.vcfg.disc_layers, self.vcfg.disc_windows
            )
            if self.gan
            else None
        )
        self.automatic_optimization = not self.gan
        self.last_batch_tokens = 0  # read by callbacks.ThroughputMonitor
        # Adaptive beta (target_kl) is training state: a buffer, so checkpoints carry it.
        self.register_buffer("beta_state", torch.tensor(float(self.vcfg.beta)))

    # -- objective ------------------------------------------------------------------------------

    def beta(self) -> float:
        if self.vcfg.target_kl > 0:
            return float(self.beta_state)
        return kl_weight(self.global_step, self.vcfg)

    def vae_terms(self, batch: dict[str, Tensor]) -> tuple[VAEOutput, dict[str, Tensor]]:
        """Teacher-forced pass and the named loss terms (per-token scale; per note with the grid)."""
        if self.grid:
            return self._grid_terms(batch)
        tokens, bar_ids = batch["tokens"].long(), batch["bar_ids"].long()
        self.last_batch_tokens = int((tokens != 0).sum())
        out = self.model(tokens, tokens != 0, bar_ids)
        per_seg = (tokens[:, 1:] != 0).sum(1).float().mean().clamp_min(1.0)
        terms = loss_terms(out.recon, out.kl_g, out.kl_b, per_seg, self.vcfg.free_bits)
        if out.bow is not None:
            terms["bow"] = out.bow
        return out, terms

    def _grid_terms(self, batch: dict[str, Tensor]) -> tuple[GridOutput, dict[str, Tensor]]:
        """The grid VAE's terms, per note: a segment's summed cell NLL and KL over its notes."""
        roll = batch["roll"].long()
        notes = batch["notes"].float()
        self.last_batch_tokens = int(notes.sum())
        out = self.model(roll)
        per_seg = notes.mean().clamp_min(1.0)
        return out, loss_terms(
            out.recon / per_seg, out.kl_g, out.kl_b, per_seg, self.vcfg.free_bits
        )

    def _log_terms(self, prefix: str, terms: dict[str, Tensor], **kw) -> None:
        for name, value in terms.items():
            self.log(f"{prefix}/{name}", value.detach(), **kw)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        batch = batch if self.grid else trim_batch(batch)
        out, terms = self.vae_terms(batch)
        beta = self.beta()
        loss = terms["recon"] + beta * terms["kl_penalized"]
        if "bow" in terms and self.vcfg.bow_weight > 0:
            loss = loss + self.vcfg.bow_weight * terms["bow"]
        if self.gan:
            loss = self._gan_step(batch, out, loss, terms)
        if self.vcfg.target_kl > 0:
            self.beta_state.fill_(
                adapt_beta(beta, float(terms["kl"]), self.vcfg.target_kl, self.vcfg.target_kl_rate)
            )
        terms["beta"] = torch.tensor(beta)
        self._log_terms("train", terms, on_step=True, on_epoch=False)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return None if self.gan else loss

    def _gan_step(
        self, batch: dict[str, Tensor], out: VAEOutput, vae_loss: Tensor, terms: dict
    ) -> Tensor:
        """One discriminator update then one generator (VAE) update; returns the generator loss."""
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        v, clip = self.vcfg, self.cfg.optim.grad_clip
        loss = vae_loss
        if self.global_step >= v.gan_warmup_steps:
            if self.grid:  # rolls: every step is real, the cells of a step form one row
                tgt, mask = batch["roll"].long(), None  # (B, T, P)
                real = F.one_hot(tgt, 3).flatten(2).float()  # (B, T, P*3)
                fake = relaxed_tokens(out.logits.float(), v.gumbel_tau).flatten(2)
            else:
                tgt = out.targets  # (B, T-1), or (B*K, L-1) bar rows with the conductor
                mask = tgt != 0
                real = F.one_hot(tgt, out.logits.shape[-1]).float()  # (B, T-1, V)
                fake = relaxed_tokens(out.logits.float(), v.gumbel_tau)  # (B, T-1, V)
            real.requires_grad_(v.r1_weight > 0)
            # discriminator step (fake detached: only D learns here)
            d_real = self.discriminator(real, mask)
            d_fake = self.discriminator(fake.detach(), mask)
            adv_d = discriminator_loss(d_real.scores, d_fake.scores, v.adv_loss)
            d_total = adv_d
            if v.r1_weight > 0:
                r1 = r1_penalty(d_real.scores, real)
                d_total = d_total + 0.5 * v.r1_weight * r1
                terms["r1"] = r1
            opt_d.zero_grad()
            self.manual_backward(d_total)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), clip)
            opt_d.optimizer.step()  # raw step: global_step counts generator steps only
            sched_d.step()
            # generator terms through the updated discriminator
            d_fake_g = self.discriminator(fake, mask)
            adv_g = generator_loss(d_fake_g.scores, v.adv_loss)
            fm = feature_matching_loss([f.detach() for f in d_real.features], d_fake_g.features)
            loss = vae_loss + v.adv_weight * adv_g + v.feature_matching_weight * fm
            terms.update(adv_d=adv_d, adv_g=adv_g, fm=fm)
            terms["d_real"] = torch.stack([s.mean() for s in d_real.scores]).mean()
            terms["d_fake"] = torch.stack([s.mean() for s in d_fake.scores]).mean()
        opt_g.zero_grad()
        self.manual_backward(loss)
        if clip > 0:
            self.clip_gradients(opt_g, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_g.step()
        sched_g.step()
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = batch if self.grid else trim_batch(batch)
        out, terms = self.vae_terms(batch)
        # tokens: next-token accuracy; grid: accuracy on the cells where a note sounds
        tgt = batch["roll"].long() if self.grid else out.targets
        mask = tgt != 0
        acc = ((out.logits.argmax(-1) == tgt) & mask).sum() / mask.sum().clamp_min(1)
        self.log(
            "val/loss",
            terms["elbo_loss"],
            prog_bar=True,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        for name in ("recon", "kl", "kl_global", "kl_bar"):
            self.log(f"val/{name}", terms[name], on_step=False, on_epoch=True, sync_dist=True)
        self.log("val/acc", acc, on_step=False, on_epoch=True, sync_dist=True)
        return terms["elbo_loss"]

    @torch.no_grad()
    def sample_ids(self, generator: torch.Generator, num_tokens: int) -> list[int]:
        """One prior sample for the training callbacks' monitoring MIDI."""
        was = self.model.training
        self.model.eval()
        try:
            z = self.model.sample_latents(1, generator)
            if self.grid:
                return self._grid_sample_ids(z, generator)
            return self.model.decode(z, num_tokens, temperature=1.0, generator=generator)[0]
        finally:
            self.model.train(was)

    def _grid_sample_ids(self, z: Latents, generator: torch.Generator) -> list[int]:
        from aurl.data import dataset
        from aurl.data.pianoroll import notes_to_score, roll_spec, rolls_to_notes

        if self._tokenizer is None:
            self._tokenizer = dataset.PreparedData(self.cfg.data.path).tokenizer
        cells = self.model.decode_cells(z, temperature=1.0, generator=generator)
        notes = rolls_to_notes(cells, roll_spec(self.vcfg))[0]
        return self._tokenizer.encode(notes_to_score(notes, self.vcfg.grid_steps_per_beat))

    # -- optimizers -----------------------------------------------------------------------------

    def configure_optimizers(self):
        o, total = self.cfg.optim, self.cfg.trainer.max_steps
        opt = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr, betas=o.betas)

        def factor(step: int) -> float:
            return lr_factor(step, o.warmup_steps, total, o.min_lr_ratio)

        first = {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor),
                "interval": "step",
            },
        }
        if not self.gan:
            return first
        # TTUR-style separate rate for D (Heusel et al. 2017); betas (0.5, 0.999) as in most GANs.
        opt_d = torch.optim.AdamW(
            self.discriminator.parameters(),
            lr=self.vcfg.disc_lr,
            betas=(0.5, 0.999),
            weight_decay=0.0,
        )
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, factor)
        return [
            first,
            {"optimizer": opt_d, "lr_scheduler": {"scheduler": sched_d, "interval": "step"}},
        ]

    # -- checkpoint and end of training ---------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aurl_config"] = to_dict(self.cfg)

    def on_train_end(self) -> None:
        if self.gan and self.trainer.is_global_zero:
            for logger in self.trainer.loggers:  # flush the CSV rows not yet written
                logger.save()
            try:
                path = plot_gan_losses(self.trainer.default_root_dir)
                log.info("GAN loss curves: %s", path)
            except (FileNotFoundError, ValueError) as exc:
                log.warning("GAN loss plot not written: %s", exc)


# ---------------------------------------------------------------------------------------------
# plots and metrics


GAN_CURVES = ("train/recon", "train/kl", "train/adv_g", "train/adv_d", "train/fm", "train/r1")


def plot_gan_losses(run_dir: str | Path) -> Path:
    """Plot the named loss terms from the run's CSV log into ``run_dir/gan_losses.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("logs/**/metrics.csv"))
    if not logs:
        raise FileNotFoundError(f"{run_dir}: no logs/**/metrics.csv (CSV logger) to plot")
    series: dict[str, list[tuple[int, float]]] = {}
    with open(logs[0], newline="") as fh:
        for row in csv.DictReader(fh):
            for name in GAN_CURVES:
                if row.get(name) not in (None, ""):
                    series.setdefault(name, []).append((int(row["step"]), float(row[name])))
    if not series:
        raise ValueError(f"{logs[0]}: none of {', '.join(GAN_CURVES)} were logged")
    fig, axes = plt.subplots(
        len(series), 1, figsize=(7, 1.8 * len(series)), sharex=True, squeeze=False
    )
    for ax, (name, pts) in zip(axes[:, 0], series.items(), strict=True):
        steps, vals = zip(*pts, strict=True)
        ax.plot(steps, vals, lw=1)
        ax.set_ylabel(name.split("/")[-1])
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out = run_dir / "gan_losses.png"
    tmp = out.with_name(".gan_losses.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
