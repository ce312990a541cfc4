"""The latent space shared by the VAE decoders: posteriors, priors and latent-space operations.

Shape legend:
    B  batch    K  bars per segment    D  global latent size    E  per-bar latent size
    M  mixture components (prior=mog)

Latents are hierarchical (MusicVAE's conductor idea, Roberts et al. 2018): a global latent z_g
describes the segment and one latent z_k per bar describes "this bar". The bar prior is conditioned
on the global latent, p(z_k | z_g, k) = N(mu(z_g, k), sigma(z_g, k)), as in a two-level ladder VAE
(Sønderby et al. 2016). :class:`LatentLadder` holds the prior side of that ladder and the
operations ``aurl sample / interpolate / vary`` need; the token VAE (``models/vae.py``) and the
piano-roll VAE (``models/grid_vae.py``) both build on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aurl.config import VAEConfig

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Posterior:
    """Diagonal Gaussian posteriors per latent group; bar tensors are None when bar latents are off."""

    mu_g: torch.Tensor  # (B, D)
    logvar_g: torch.Tensor  # (B, D)
    mu_b: torch.Tensor | None = None  # (B, K, E)
    logvar_b: torch.Tensor | None = None  # (B, K, E)


@dataclass
class Latents:
    """A point in latent space: the global latent and, optionally, one latent per bar."""

    z_g: torch.Tensor  # (B, D)
    z_b: torch.Tensor | None = None  # (B, K, E)

    def select(self, index: torch.Tensor | slice | int) -> Latents:
        """Rows ``index`` of the batch (keeps the batch axis for an int)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Latents(self.z_g[index], None if self.z_b is None else self.z_b[index])


# ---------------------------------------------------------------------------------------------
# pure latent-space helpers


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per dimension, same shape as the inputs (nats)."""
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0
    )


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, var) per dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp())


def slerp(za: torch.Tensor, zb: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the last axis (White 2016, "Sampling generative networks").

    Gaussian latents concentrate on a shell of radius ~sqrt(D); a straight line between two points
    passes through the low-density interior, slerp stays near the shell. Falls back to linear
    interpolation where the two vectors are (anti)parallel.
    """
    a = za / za.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b = zb / zb.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    omega = torch.acos((a * b).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    lerp = (1 - t) * za + t * zb
    sl = (torch.sin((1 - t) * omega) / so) * za + (torch.sin(t * omega) / so) * zb
    return torch.where(so.abs() < 1e-6, lerp, sl)


# ---------------------------------------------------------------------------------------------
# priors


class GaussianPrior(nn.Module):
    """Standard normal prior over the global latent; KL in closed form."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """KL per dimension (B, D)."""
        zeros = torch.zeros_like(mu)
        return gaussian_kl(mu, logvar, zeros, zeros)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(iter(self.buffers()), torch.empty(0)).device
        return torch.randn(num, self.dim, generator=generator, device=device)

    def std_at(self, z: torch.Tensor) -> torch.Tensor:
        """Prior std around z (used by ``vary``): 1 everywhere."""
        return torch.ones_like(z)


class MixturePrior(nn.Module):
    """Mixture of M diagonal Gaussians with learned means (VampPrior-like flexibility, Tomczak 2018).

    The KL has no closed form, so it is a one-sample Monte Carlo estimate
    log q(z|x) - log p(z) at the reparameterized z, spread evenly over the dimensions so that free
    bits can still act per dimension (the per-dimension split of a joint estimate is an
    approximation; the sum is exact in expectation).
    """

    def __init__(self, dim: int, components: int, learn_variance: bool = True) -> None:
        super().__init__()
        self.dim = dim
        # Means spread like prior samples so components start distinct (not collapsed at 0).
        self.means = nn.Parameter(torch.randn(components, dim))
        self.logvars = nn.Parameter(torch.zeros(components, dim), requires_grad=learn_variance)
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over dimensions: (B,)."""
        lp = gaussian_log_prob(z[:, None, :], self.means[None], self.logvars[None]).sum(
            -1
        )  # (B, M)
        return torch.logsumexp(lp + F.log_softmax(self.logits, -1), dim=-1)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        log_q = gaussian_log_prob(z, mu, logvar).sum(-1)  # (B,)
        per_seq = log_q - self.log_prob(z)  # (B,)
        return (per_seq / self.dim)[:, None].expand(-1, self.dim)  # (B, D)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = F.softmax(self.logits.detach(), -1)
        k = torch.multinomial(probs, num, replacement=True, generator=generator)  # (B,)
        eps = torch.randn(num, self.dim, generator=generator, device=self.means.device)
        return self.means[k].detach() + eps * (0.5 * self.logvars[k].detach()).exp()

    def std_at(self, z: torch.Tensor) -> torch.Tensor:
        """Std of the component most responsible for z."""
        lp = gaussian_log_prob(z[:, None, :], self.means[None], self.logvars[None]).sum(-1)
        k = (lp + F.log_softmax(self.logits, -1)).argmax(-1)  # (B,)
        return (0.5 * self.logvars[k]).exp().detach()


def build_prior(cfg: VAEConfig) -> nn.Module:
    if cfg.prior == "mog":
        return MixturePrior(cfg.latent_dim, cfg.prior_components, cfg.prior_learn_variance)
    return GaussianPrior(cfg.latent_dim)


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * (0.5 * logvar).exp()


class LatentLadder(nn.Module):
    """Global prior + conditional bar prior, and the latent-space operations built on them.

    Subclasses call :meth:`init_ladder` and provide posteriors; sampling, interpolation and
    variation only need the priors, so they live here once for every decoder.
    """

    def init_ladder(self, cfg: VAEConfig, d_model: int) -> None:
        C, D, E, K = d_model, cfg.latent_dim, cfg.bar_latent_dim, cfg.bars_per_segment
        self.num_bars = K if E > 0 else 0
        self.prior = build_prior(cfg)
        if E > 0:
            self.bar_pos = nn.Embedding(K, C)
            # Conditional bar prior p(z_k | z_g, k): the ladder's top-down path.
            self.bar_prior = nn.Sequential(nn.Linear(D + C, C), nn.GELU(), nn.Linear(C, 2 * E))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def bar_prior_params(self, z_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional prior of the bar latents given z_g: (mu, logvar), each (B, K, E)."""
        B = z_g.shape[0]
        pos = self.bar_pos.weight[None].expand(B, -1, -1)  # (B, K, C)
        h = torch.cat([z_g[:, None, :].expand(-1, self.num_bars, -1), pos], dim=-1)  # (B, K, D+C)
        mu, logvar = self.bar_prior(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-6.0, 4.0)

    def posterior_mean(self, post: Posterior) -> Latents:
        """The posterior means as latents (no sampling): reconstruction and interpolation use this."""
        return Latents(post.mu_g, post.mu_b)

    # -- latent-space operations -----------------------------------------------------------

    @torch.no_grad()
    def sample_latents(self, num: int, generator: torch.Generator | None = None) -> Latents:
        """Draw latents from the prior (global, then bars given the global)."""
        z_g = self.prior.sample(num, generator).to(self.device)
        if not self.num_bars:
            return Latents(z_g)
        return Latents(z_g, self.bar_latents(z_g, generator))

    @torch.no_grad()
    def bar_latents(
        self, z_g: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Fresh bar latents (B, K, E) drawn given the global latents (the conditional prior)."""
        mu, logvar = self.bar_prior_params(z_g)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        return mu + eps * (0.5 * logvar).exp()

    @staticmethod
    def interpolate(za: Latents, zb: Latents, steps: int) -> Latents:
        """``steps`` points from za to zb (both ends included), slerp per latent group."""
        if steps < 2:
            raise ValueError(f"steps={steps} must be >= 2 (the two ends are included)")
        ts = [i / (steps - 1) for i in range(steps)]
        z_g = torch.cat([slerp(za.z_g, zb.z_g, t) for t in ts])  # (steps, D)
        z_b = None
        if za.z_b is not None and zb.z_b is not None:
            K, E = za.z_b.shape[1:]
            flat = [slerp(za.z_b.reshape(-1, K * E), zb.z_b.reshape(-1, K * E), t) for t in ts]
            z_b = torch.cat(flat).reshape(steps, K, E)  # (steps, K, E)
        return Latents(z_g, z_b)

    @torch.no_grad()
    def vary(
        self, z: Latents, amount: float, num: int, generator: torch.Generator | None = None
    ) -> Latents:
        """``num`` perturbations of one latent: z + amount * prior std * N(0, I), per group."""
        if amount < 0:
            raise ValueError(f"amount={amount} must be >= 0 (a fraction of the prior std)")
        z_g = z.z_g[:1].expand(num, -1)
        std_g = self.prior.std_at(z_g)
        eps = torch.randn(z_g.shape, generator=generator, device=z_g.device)
        new_g = z_g + amount * std_g * eps
        if z.z_b is None or not self.num_bars:
            return Latents(new_g)
        _, logvar = self.bar_prior_params(new_g)
        z_b = z.z_b[:1].expand(num, -1, -1)
        eps = torch.randn(z_b.shape, generator=generator, device=z_b.device)
        return Latents(new_g, z_b + amount * (0.5 * logvar).exp() * eps)
