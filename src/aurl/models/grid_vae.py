"""The piano-roll VAE (``model.vae.decoder=grid``): a latent space a CPU can teach to hold music.

Shape legend:
    B  batch          T  grid steps per segment (K bars x steps per bar)    C  model width
    K  bars           S  steps per bar                                        P  pitches
    D  global latent  E  per-bar latent                                       3  cell classes

Why (issue 13): an autoregressive decoder, flat or per bar (``models/conductor.py``), can predict
most of the next token from the tokens before it. On this CPU's budgets it learned to do that
first and to read z second: after 5,357 steps the conductor's greedy decodes kept a quarter of the
notes (note F1 0.245). Here the decoder is **not autoregressive**: every cell of the segment's
piano roll (off / onset / hold, ``data/pianoroll.py``) is predicted at once from the latents and
its own position. No cell can be predicted from another cell's value, so everything the decoder
writes has to come through z; posterior collapse has nothing to collapse to. This is the limit
issue 13 asks for, taken to its end: attention is free to span the segment because no position
sees any of the music, only the latents.

- Encoder: the roll's onset and sounding planes per step -> linear -> bidirectional blocks ->
  a global posterior from the mean over steps and a posterior per bar from the mean over its
  steps (learned step positions, so a bar latent knows *when* its notes sound).
- Latents: the ladder of :class:`~aurl.models.latent_space.LatentLadder` (global + per bar, the
  bar prior conditioned on the global latent), so ``aurl sample / interpolate / vary`` work as
  with the token VAE.
- Decoder: a conductor MLP turns (z_g, z_k, bar k) into one state per bar; every step's query is
  its bar's state + its step position; bidirectional blocks mix the queries; a head gives 3
  logits per (step, pitch). Independent cells can disagree (a HOLD after silence): the way back to
  notes (:func:`aurl.data.pianoroll.from_roll`) drops such holds.

Costs: the output is a fixed grid, so the time resolution (16ths for Bach) and the pitch range
are set at training time, and one velocity is written back. The likelihood is per cell, not per
token: its bits per note are not comparable with the language model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aurl.config import ModelConfig
from aurl.models.latent_space import (
    LatentLadder,
    Latents,
    Posterior,
    gaussian_kl,
    reparameterize,
)

CLASSES = 3  # off, onset, hold (aurl.data.pianoroll)


@dataclass
class GridOutput:
    """One training pass: the cell logits and the terms the objective weighs."""

    logits: torch.Tensor  # (B, T, P, 3)
    recon: torch.Tensor  # scalar: mean over the batch of the segment's summed cell NLL, nats
    kl_g: torch.Tensor  # (B, D) nats per dimension
    kl_b: torch.Tensor | None  # (B, K, E)
    posterior: Posterior
    latents: Latents


class GridVAE(LatentLadder):
    """Piano-roll encoder, hierarchical latents, non-autoregressive piano-roll decoder."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from aurl.models.blocks import make_block, make_norm

        v = cfg.vae
        self.cfg = cfg
        C, D, E, K = cfg.d_model, v.latent_dim, v.bar_latent_dim, v.bars_per_segment
        self.steps_per_bar = v.beats_per_bar * v.grid_steps_per_beat
        self.steps = K * self.steps_per_bar
        self.pitches = v.grid_pitch_high - v.grid_pitch_low
        self.init_ladder(v, C)
        if E <= 0:
            raise ValueError(
                "model.vae.decoder=grid needs bar latents (model.vae.bar_latent_dim > 0)"
            )
        T, P = self.steps, self.pitches
        # encoder
        self.enc_in = nn.Linear(2 * P, C)
        self.enc_pos = nn.Parameter(torch.randn(T, C) * 0.02)
        self.encoder_blocks = nn.ModuleList(
            make_block(cfg, causal=False) for _ in range(v.encoder_layers)
        )
        self.encoder_norm = make_norm(cfg.norm, C)
        # Each bar is read through all of its steps (a linear map of the S step states), not a
        # mean over them: a mean pools "which pitch when" into "which pitches", and the latents
        # learned far more slowly with it (BENCHMARKS.md, issue 13's grid ablation).
        self.bar_read = nn.Linear(self.steps_per_bar * C, C)
        self.to_global = nn.Linear(C, 2 * D)
        self.to_bar = nn.Linear(C + D, 2 * E)
        # decoder
        self.conductor = nn.Sequential(nn.Linear(D + E + C, 2 * C), nn.GELU(), nn.Linear(2 * C, C))
        # ... and each bar's state is written out to its S steps by a linear map (one slice per
        # step), so every step starts from its own function of the latents.
        self.bar_write = nn.Linear(C, self.steps_per_bar * C)
        self.dec_pos = nn.Parameter(torch.randn(T, C) * 0.02)
        self.decoder_blocks = nn.ModuleList(
            make_block(cfg, causal=False) for _ in range(cfg.n_layers)
        )
        self.decoder_norm = make_norm(cfg.norm, C)
        self.head = nn.Linear(C, P * CLASSES)
        with torch.no_grad():  # log-variance halves of the posterior heads
            self.to_global.bias[D:].fill_(v.posterior_logvar_init)
            self.to_bar.bias[E:].fill_(v.posterior_logvar_init)
        # What `aurl sample` draws from once fitted (fit_sampler; stored beside the weights in a
        # bundle as sampler.safetensors, not in training checkpoints): None = the prior.
        self.sampler: dict[str, torch.Tensor] | None = None

    # -- encoder ---------------------------------------------------------------------------

    def encode(self, roll: torch.Tensor) -> Posterior:
        """Posterior of a batch of rolls (B, T, P) of classes (the bar posterior given mu_g)."""
        h = self._encoder_states(roll)
        mu_g, logvar_g = self._global_posterior(h)
        mu_b, logvar_b = self._bar_posterior(h, mu_g)
        return Posterior(mu_g, logvar_g, mu_b, logvar_b)

    def _encoder_states(self, roll: torch.Tensor) -> torch.Tensor:
        planes = torch.cat([(roll == 1), (roll > 0)], dim=-1).to(self.enc_pos.dtype)  # (B, T, 2P)
        x = self.enc_in(planes) + self.enc_pos  # (B, T, C)
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def _bar_states(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, C) step states -> (B, K, C): each bar read through all of its steps."""
        B, K = h.shape[0], self.num_bars
        return self.bar_read(h.reshape(B, K, -1)) + self.bar_pos.weight  # (B, K, C)

    def _global_posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_global(self._bar_states(h).mean(1)).chunk(2, dim=-1)  # (B, D) each
        return mu, logvar.clamp(-10.0, 10.0)

    def _bar_posterior(
        self, h: torch.Tensor, z_g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        K = self.num_bars
        bars = self._bar_states(h)  # (B, K, C)
        cond = z_g[:, None, :].expand(-1, K, -1)  # (B, K, D)
        mu, logvar = self.to_bar(torch.cat([bars, cond], dim=-1)).chunk(2, dim=-1)  # (B, K, E)
        return mu, logvar.clamp(-10.0, 10.0)

    # -- decoder ---------------------------------------------------------------------------

    def logits(self, latents: Latents) -> torch.Tensor:
        """Cell logits (B, T, P, 3) of the segments the latents describe."""
        z_g, z_b = latents.z_g, latents.z_b
        B, K = z_g.shape[0], self.num_bars
        pos = self.bar_pos.weight[None].expand(B, -1, -1)  # (B, K, C)
        state = self.conductor(torch.cat([z_g[:, None].expand(-1, K, -1), z_b, pos], -1))
        x = self.bar_write(state).view(B, self.steps, -1) + self.dec_pos  # (B, T, C)
        for block in self.decoder_blocks:
            x = block(x)
        return self.head(self.decoder_norm(x)).view(B, self.steps, self.pitches, CLASSES)

    def forward(self, roll: torch.Tensor, generator: torch.Generator | None = None) -> GridOutput:
        """Encode, sample the latents (reparameterized), decode, score every cell."""
        h = self._encoder_states(roll)
        mu_g, logvar_g = self._global_posterior(h)
        z_g = reparameterize(mu_g, logvar_g, generator)
        mu_b, logvar_b = self._bar_posterior(h, z_g)  # the ladder: bars see the sampled z_g
        z_b = reparameterize(mu_b, logvar_b, generator)
        mu_p, logvar_p = self.bar_prior_params(z_g)
        latents = Latents(z_g, z_b)
        logits = self.logits(latents)
        return GridOutput(
            logits,
            self.cell_nll(logits, roll).mean(),
            self.prior.kl(mu_g, logvar_g, z_g),
            gaussian_kl(mu_b, logvar_b, mu_p, logvar_p),
            Posterior(mu_g, logvar_g, mu_b, logvar_b),
            latents,
        )

    @staticmethod
    def cell_nll(logits: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of every cell of each segment: (B,) nats."""
        ce = F.cross_entropy(logits.float().flatten(0, 2), roll.flatten(), reduction="none")
        return ce.view(roll.shape[0], -1).sum(1)

    @torch.no_grad()
    def decode_cells(
        self,
        latents: Latents,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Cell classes (B, T, P): argmax at temperature 0, else one draw per cell."""
        logits = self.logits(latents).float()
        if temperature <= 0:
            return logits.argmax(-1)
        probs = F.softmax(logits / temperature, -1).flatten(0, 2)  # (B*T*P, 3)
        draw = torch.multinomial(probs, 1, generator=generator)
        return draw.view(logits.shape[:-1])

    # -- sampling from the training posteriors ---------------------------------------------

    @torch.no_grad()
    def fit_sampler(self, means: Latents) -> None:
        """Fit what :meth:`sample_latents` draws from to the posterior means of training segments.

        The KL term leaves a gap between the prior and where the encoder puts real music (~154
        nats per segment here), and the non-autoregressive decoder, whose cells cannot agree
        with each other, turns an off-manifold point into thin, scattered notes. Ex-post density
        estimation (Ghosh et al. 2020) samples from a density fitted to the encoded training set
        instead: one full-covariance Gaussian over (z_g, z_b), kept as the global marginal and the
        bars given the global (a linear-Gaussian conditional), so a piece can keep one global
        latent and draw fresh bars per segment as with the prior. The prior stays what the KL,
        ``vary`` and the ladder use.
        """
        D = means.z_g.shape[1]
        z = torch.cat([means.z_g, means.z_b.flatten(1)], 1).double().cpu()  # (N, D + K*E)
        if len(z) <= z.shape[1]:
            raise ValueError(f"fit_sampler needs more than {z.shape[1]} segments, got {len(z)}")
        cov = torch.cov(z.T)
        eye = torch.eye(len(cov), dtype=cov.dtype)
        cov = cov + 1e-4 * cov.diagonal().mean() * eye  # a ridge: full rank whatever the data
        s_gg, s_gb, s_bb = cov[:D, :D], cov[:D, D:], cov[D:, D:]
        gain = torch.linalg.solve(s_gg, s_gb).T  # (K*E, D): E[z_b | z_g] = m_b + gain (z_g - m_g)
        self.sampler = {
            "mean": z.mean(0),
            "tril_g": torch.linalg.cholesky(s_gg),
            "gain": gain,
            "tril_b": torch.linalg.cholesky(s_bb - gain @ s_gb),
            "segments": torch.tensor(float(len(z))),
        }
        self.sampler = {k: v.float() for k, v in self.sampler.items()}

    @torch.no_grad()
    def sample_latents(self, num: int, generator: torch.Generator | None = None) -> Latents:
        """Latents from the fitted sampler (:meth:`fit_sampler`), else from the prior."""
        if self.sampler is None:
            return super().sample_latents(num, generator)
        tril = self.sampler["tril_g"]
        eps = torch.randn((num, len(tril)), generator=generator)
        z_g = (self.sampler["mean"][: len(tril)] + eps @ tril.T).to(self.device)
        return Latents(z_g, self.bar_latents(z_g, generator))

    @torch.no_grad()
    def bar_latents(
        self, z_g: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Bar latents (B, K, E) given the global ones: the fitted conditional, else the prior's."""
        if self.sampler is None:
            return super().bar_latents(z_g, generator)
        s, D = self.sampler, z_g.shape[1]
        mean = s["mean"][D:] + (z_g.cpu() - s["mean"][:D]) @ s["gain"].T  # (B, K*E)
        eps = torch.randn(mean.shape, generator=generator)
        z_b = mean + eps @ s["tril_b"].T
        return z_b.view(len(z_g), self.num_bars, -1).to(z_g.device)
