"""Multi-scale spectral-norm discriminator for the VAE-GAN, and its loss functions.

Shape legend:
    B  batch      T  tokens      V  vocabulary      C  discriminator width
    S  scales (one per window in ``disc_windows``)  N  windows of one scale (ceil(T / window))

Input: token distributions (B, T, V). Real data enter as one-hot rows; generated data as
straight-through Gumbel-softmax samples of the decoder's teacher-forced logits (Jang et al. 2017):
the forward value is a hard one-hot like real data (a soft distribution would be told apart by its
entropy alone), and the backward pass carries the softmax gradient to the decoder. We chose relaxed
tokens over decoder hidden states because real data have no hidden states of their own - the
states of a teacher-forced real sequence are themselves a function of the generator, so "real"
would move as the generator trains.

Each scale reads the same embedded sequence with its own dilated-convolution stack and scores
non-overlapping windows of ``window`` tokens (note, bar and phrase scales: 16, 64, 256 REMI tokens
are roughly a beat, a bar and a phrase of a chorale). Every weight is spectrally normalized
(Miyato et al. 2018), which bounds the discriminator's Lipschitz constant and keeps the adversarial
gradient reaching the decoder useful.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass
class DiscOutput:
    """Scores per window and intermediate features (for feature matching), one entry per scale."""

    scores: list[torch.Tensor]  # S x (B, N)
    features: list[torch.Tensor]  # S * disc_layers x (B, C, T)


class _Scale(nn.Module):
    def __init__(self, width: int, layers: int, window: int) -> None:
        super().__init__()
        self.window = window
        # Dilation doubles per layer so the receptive field (2^layers+1 tokens) grows with depth.
        self.convs = nn.ModuleList(
            spectral_norm(nn.Conv1d(width, width, 3, padding=2**i, dilation=2**i))
            for i in range(layers)
        )
        self.head = spectral_norm(nn.Linear(width, 1))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, C, T), mask (B, T) -> scores (B, N), features per layer."""
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2) * mask[:, None, :]  # (B, C, T)
            feats.append(x)
        B, C, T = x.shape
        w = min(self.window, T)
        pad = (-T) % w
        xs = F.pad(x, (0, pad)).view(B, C, -1, w)  # (B, C, N, w)
        ms = F.pad(mask, (0, pad)).view(B, 1, -1, w)  # (B, 1, N, w)
        pooled = xs.sum(-1) / ms.sum(-1).clamp_min(1.0)  # (B, C, N)
        return self.head(pooled.transpose(1, 2)).squeeze(-1), feats  # (B, N)


class MultiScaleDiscriminator(nn.Module):
    """Scores token sequences at several window lengths; see the module docstring."""

    def __init__(self, vocab_size: int, width: int, layers: int, windows: tuple[int, ...]) -> None:
        super().__init__()
        if not windows or min(windows) <= 0:
            raise ValueError(f"model.vae.disc_windows={windows} must be positive window lengths")
        if layers <= 0:
            raise ValueError(f"model.vae.disc_layers={layers} must be > 0")
        self.embed = spectral_norm(nn.Linear(vocab_size, width, bias=False))
        self.scales = nn.ModuleList(_Scale(width, layers, w) for w in windows)

    def forward(self, probs: torch.Tensor, mask: torch.Tensor | None = None) -> DiscOutput:
        """probs (B, T, V) one-hot or relaxed tokens; mask (B, T) true on real positions."""
        if mask is None:
            mask = torch.ones(probs.shape[:2], dtype=torch.bool, device=probs.device)
        m = mask.to(probs.dtype)
        x = self.embed(probs).transpose(1, 2) * m[:, None, :]  # (B, T, C) -> (B, C, T)
        scores, feats = [], []
        for scale in self.scales:
            s, f = scale(x, m)
            scores.append(s)
            feats.extend(f)
        return DiscOutput(scores, feats)


def relaxed_tokens(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Straight-through Gumbel-softmax (B, T, V): hard one-hot forward, soft gradient backward.

    Seeded through ``generator`` (``F.gumbel_softmax`` draws from the global RNG).
    """
    if tau <= 0:
        raise ValueError(f"model.vae.gumbel_tau={tau} must be > 0")
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    soft = F.softmax((logits + gumbel) / tau, dim=-1)  # (B, T, V)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


# ---------------------------------------------------------------------------------------------
# losses (pure; each returns a scalar)


def _masked_mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return x.mean() if weight is None else (x * weight).sum() / weight.sum().clamp_min(1.0)


def discriminator_loss(
    real: list[torch.Tensor], fake: list[torch.Tensor], kind: str
) -> torch.Tensor:
    """Hinge (Lim & Ye 2017) or non-saturating (Goodfellow 2014) loss, averaged over scales."""
    total = 0.0
    for r, f in zip(real, fake, strict=True):
        if kind == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        elif kind == "nsgan":
            total = total + F.softplus(-r).mean() + F.softplus(f).mean()
        else:
            raise ValueError(f"model.vae.adv_loss={kind!r}; choose hinge or nsgan")
    return total / len(real)


def generator_loss(fake: list[torch.Tensor], kind: str) -> torch.Tensor:
    """The generator's adversarial term, averaged over scales."""
    total = 0.0
    for f in fake:
        if kind == "hinge":
            total = total - f.mean()
        elif kind == "nsgan":
            total = total + F.softplus(-f).mean()
        else:
            raise ValueError(f"model.vae.adv_loss={kind!r}; choose hinge or nsgan")
    return total / len(fake)


def feature_matching_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared difference of the batch-and-time mean features (Salimans et al. 2016)."""
    total = 0.0
    for r, f in zip(real, fake, strict=True):
        total = total + (r.detach().mean(dim=(0, 2)) - f.mean(dim=(0, 2))).pow(2).mean()
    return total / len(real)


def r1_penalty(real_scores: list[torch.Tensor], real_input: torch.Tensor) -> torch.Tensor:
    """R1 = E ||grad_x D(x)||^2 on real data (Mescheder et al. 2018); real_input must require grad."""
    total = sum(s.sum() for s in real_scores)
    (grad,) = torch.autograd.grad(total, real_input, create_graph=True)
    return grad.pow(2).sum(dim=(1, 2)).mean()
