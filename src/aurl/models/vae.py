"""MusicVAE-style latent model: bidirectional encoder, hierarchical latents, priors, prefix decoder.

Shape legend:
    B  batch            T  tokens in a segment       C  model width (d_model)
    K  bars per segment D  global latent size         E  per-bar latent size
    M  mixture components (prior=mog)                 V  vocabulary size
    P  prefix length = 1 + K (one embedding for the global latent, one per bar latent)

Latents are hierarchical (MusicVAE's conductor idea, Roberts et al. 2018): a global latent z_g
describes the segment and one latent z_k per bar describes "this bar". The bar prior is conditioned
on the global latent, p(z_k | z_g, k) = N(mu(z_g, k), sigma(z_g, k)), as in a two-level ladder VAE
(Sønderby et al. 2016), so sampling from the prior yields bars that agree with the segment's global
character. The posterior of a bar latent sees its bar's pooled encoder states and z_g.

Conditioning the decoder: each latent becomes ONE prefix embedding placed before the tokens
(MusicTransformer's ``prefix=``). We chose a prefix over adding a bar latent to the embeddings of
the tokens of its bar because (1) the decoder contract and its KV cache stay unchanged - the prefix
is written into the cache once, then decoding is ordinary; (2) adding per-bar vectors during
generation would require knowing bar boundaries token by token, i.e. importing the tokenizer's
timing into ``models/``, which the architecture forbids.

That flat decoder ignores z (issue 13). ``model.vae.decoder=conductor`` selects the hierarchical
decoder of ``models/conductor.py`` instead: every bar is decoded as its own sequence from its own
prefix, so the latents must carry the bar's content. The bar boundaries that generation needs
come from the caller (``generation/latent.py`` tracks time with the grammar state).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aurl.config import ModelConfig, VAEConfig
from aurl.models.conductor import Conductor, bag_of_notes_nll, bar_rows

LOG_2PI = math.log(2 * math.pi)
PAD_ID = 0
"""The tokenizer's PAD id (also ignored by MusicTransformer's loss)."""
BOS_ID, EOS_ID = 1, 2
"""The tokenizer's BOS and EOS ids (``aurl.tokenization``: PAD 0, BOS 1, EOS 2)."""


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


@dataclass
class VAEOutput:
    """What one teacher-forced pass produces; the objective (training/vae_module.py) weighs it."""

    logits: torch.Tensor  # (B, T-1, V) flat decoder; (B*K, L-1, V) bar rows with the conductor
    recon: torch.Tensor  # scalar: mean token cross-entropy (PAD ignored)
    kl_g: torch.Tensor  # (B, D) KL per global latent dimension, nats
    kl_b: (
        torch.Tensor | None
    )  # (B, K, E) KL per bar latent dimension, nats (None without bar latents)
    posterior: Posterior
    latents: Latents
    hidden: torch.Tensor  # (B, T, C) decoder hidden states
    targets: torch.Tensor | None = None  # ids the logits predict, same leading shape (PAD = ignore)
    bow: torch.Tensor | None = None  # scalar bag-of-notes NLL (conductor only)


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


# ---------------------------------------------------------------------------------------------
# the model


class MusicVAE(nn.Module):
    """Encoder blocks + latent heads + prior + a MusicTransformer decoder conditioned by prefix.

    Built by :func:`build_vae`; modules are passed in (composition), so tests and variants can swap
    the decoder. The encoder reuses the decoder's token embedding (one vocabulary, one table).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        decoder: nn.Module,
        encoder_blocks: nn.ModuleList,
        encoder_norm: nn.Module,
    ) -> None:
        super().__init__()
        v = cfg.vae
        self.cfg = cfg
        self.decoder = decoder
        self.encoder_blocks = encoder_blocks
        self.encoder_norm = encoder_norm
        C, D, E, K = cfg.d_model, v.latent_dim, v.bar_latent_dim, v.bars_per_segment
        self.num_bars = K if E > 0 else 0
        self.to_global = nn.Linear(C, 2 * D)
        self.prior = build_prior(v)
        self.global_to_prefix = nn.Linear(D, C)
        if E > 0:
            self.bar_pos = nn.Embedding(K, C)
            self.to_bar = nn.Linear(C + D, 2 * E)
            # Conditional bar prior p(z_k | z_g, k): the ladder's top-down path.
            self.bar_prior = nn.Sequential(nn.Linear(D + C, C), nn.GELU(), nn.Linear(C, 2 * E))
            self.bar_to_prefix = nn.Linear(E, C)
        self.enc_bar_pos: nn.Embedding | None = None
        if v.encoder_bar_positions:
            # place of each token within its bar (the encoder mean-pools bars; rotary attention
            # leaves its states without absolute positions, so a bar latent would not know *when*)
            self.enc_bar_pos = nn.Embedding(cfg.max_seq_len, C)
            nn.init.normal_(self.enc_bar_pos.weight, std=0.02)
        self.conductor: Conductor | None = None
        if v.decoder == "conductor":
            self.conductor = Conductor(C, D, E, K, cfg.vocab_size)
        with torch.no_grad():  # log-variance halves of the posterior heads
            self.to_global.bias[D:].fill_(v.posterior_logvar_init)
            if E > 0:
                self.to_bar.bias[E:].fill_(v.posterior_logvar_init)

    # -- encoder ---------------------------------------------------------------------------

    def _encoder_states(
        self, tokens: torch.Tensor, mask: torch.Tensor, bar_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bidirectional pass over the segment with the decoder's embedding and positions: (B, T, C)."""
        T = tokens.shape[1]
        x = self.decoder.tok_emb(tokens)  # (B, T, C)
        if self.enc_bar_pos is not None:
            K = self.cfg.vae.bars_per_segment
            pos = bar_positions(bar_ids if bar_ids is not None else even_bar_ids(mask, K), K)
            x = x + self.enc_bar_pos(pos.clamp_max(self.enc_bar_pos.num_embeddings - 1))
        rope = None
        if self.decoder.rotary is not None:
            rope = self.decoder.rotary(T, 0)  # (T, D) each
        elif self.decoder.pos_emb is not None:
            x = x + self.decoder.pos_emb(torch.arange(T, device=x.device))  # (B, T, C)
        for block in self.encoder_blocks:
            x = block(x, rope=rope, key_mask=mask)
        return self.encoder_norm(x)

    def encode(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        bar_ids: torch.Tensor | None = None,
    ) -> Posterior:
        """Posterior of a batch of segments (the bar posterior conditioned on the global mean).

        tokens (B, T); mask (B, T) true on real tokens (default: tokens != PAD=0); bar_ids (B, T)
        the bar index 0..K-1 of each token, -1 on padding (default: the valid tokens split into K
        equal runs).
        """
        if mask is None:
            mask = tokens != 0
        x = self._encoder_states(tokens, mask, bar_ids)  # (B, T, C)
        mu_g, logvar_g = self._global_posterior(x, mask)
        if not self.num_bars:
            return Posterior(mu_g, logvar_g)
        mu_b, logvar_b = self._bar_posterior(x, mask, bar_ids, mu_g)
        return Posterior(mu_g, logvar_g, mu_b, logvar_b)

    def _global_posterior(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.to(x.dtype)[..., None]  # (B, T, 1)
        pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, C)
        mu, logvar = self.to_global(pooled).chunk(2, dim=-1)  # (B, D) each
        # Clamped so exp() stays finite early in training; e^-10 is far below any useful variance.
        return mu, logvar.clamp(-10.0, 10.0)

    def _bar_posterior(
        self, x: torch.Tensor, mask: torch.Tensor, bar_ids: torch.Tensor | None, z_g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_k | bar k's encoder states, z_g): (mu, logvar), each (B, K, E)."""
        if bar_ids is None:
            bar_ids = even_bar_ids(mask, self.num_bars)
        valid = (mask & (bar_ids >= 0)).to(x.dtype)[..., None]  # (B, T, 1)
        onehot = (
            F.one_hot(bar_ids.clamp(0, self.num_bars - 1), self.num_bars).to(x.dtype) * valid
        )  # (B, T, K)
        counts = onehot.sum(1)[..., None].clamp_min(1.0)  # (B, K, 1)
        bar_pooled = onehot.transpose(1, 2) @ x / counts  # (B, K, T) @ (B, T, C) -> (B, K, C)
        cond = z_g[:, None, :].expand(-1, self.num_bars, -1)  # (B, K, D)
        h = torch.cat([bar_pooled + self.bar_pos.weight[None], cond], dim=-1)  # (B, K, C+D)
        mu, logvar = self.to_bar(h).chunk(2, dim=-1)  # (B, K, E) each
        return mu, logvar.clamp(-10.0, 10.0)

    def bar_prior_params(self, z_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional prior of the bar latents given z_g: (mu, logvar), each (B, K, E)."""
        B = z_g.shape[0]
        pos = self.bar_pos.weight[None].expand(B, -1, -1)  # (B, K, C)
        h = torch.cat([z_g[:, None, :].expand(-1, self.num_bars, -1), pos], dim=-1)  # (B, K, D+C)
        mu, logvar = self.bar_prior(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-6.0, 4.0)

    # -- decoder ---------------------------------------------------------------------------

    def prefix(self, latents: Latents) -> torch.Tensor:
        """Decoder prefix embeddings (B, P, C): the global latent first, then one per bar."""
        parts = [self.global_to_prefix(latents.z_g)[:, None, :]]  # (B, 1, C)
        if self.num_bars and latents.z_b is not None:
            parts.append(self.bar_to_prefix(latents.z_b) + self.bar_pos.weight[None])  # (B, K, C)
        return torch.cat(parts, dim=1)

    def forward(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        bar_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> VAEOutput:
        """Teacher-forced pass: encode, reparameterize, decode ``tokens[:, :-1]`` -> ``tokens[:, 1:]``."""
        if mask is None:
            mask = tokens != 0
        x = self._encoder_states(tokens, mask, bar_ids)  # (B, T, C)
        mu_g, logvar_g = self._global_posterior(x, mask)
        z_g = reparameterize(mu_g, logvar_g, generator)
        kl_g = self.prior.kl(mu_g, logvar_g, z_g)  # (B, D)
        post = Posterior(mu_g, logvar_g)
        z_b = kl_b = None
        if self.num_bars:
            # Ladder: the bar posterior sees the sampled z_g, as the bar prior does.
            mu_b, logvar_b = self._bar_posterior(x, mask, bar_ids, z_g)
            post = Posterior(mu_g, logvar_g, mu_b, logvar_b)
            z_b = reparameterize(mu_b, logvar_b, generator)
            mu_p, logvar_p = self.bar_prior_params(z_g)
            kl_b = gaussian_kl(mu_b, logvar_b, mu_p, logvar_p)  # (B, K, E)
        latents = Latents(z_g, z_b)
        logits, tgt, recon, hidden, bow = self.teacher_forced(tokens, latents, bar_ids, generator)
        return VAEOutput(logits, recon, kl_g, kl_b, post, latents, hidden, tgt, bow)

    def teacher_forced(
        self,
        tokens: torch.Tensor,
        latents: Latents,
        bar_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Decode ``tokens`` given ``latents`` with teacher forcing (word dropout when training).

        Returns (logits, targets, mean cross-entropy, hidden, bag-of-notes NLL or None). The flat
        decoder predicts ``tokens[:, 1:]``; the conductor predicts the bar rows of
        :func:`conductor.bar_rows` (B*K rows ``BOS bar EOS``), each from its own bar prefix.
        """
        bow = None
        if self.conductor is None:
            inp, tgt = tokens[:, :-1], tokens[:, 1:]  # (B, T-1) each
            prefix = self.prefix(latents)  # (B, P, C)
        else:
            K = self.conductor.num_bars
            if bar_ids is None:
                bar_ids = even_bar_ids(tokens != PAD_ID, K)
            rows = bar_rows(tokens, bar_ids, K, BOS_ID, EOS_ID, PAD_ID)  # (B, K, L)
            bar_prefix, bow_logits = self.conductor(latents.z_g, latents.z_b)  # (B,K,P,C), (B,K,V)
            bow = bag_of_notes_nll(bow_logits, rows, (PAD_ID, BOS_ID, EOS_ID))
            flat = rows.flatten(0, 1)  # (B*K, L)
            inp, tgt = flat[:, :-1], flat[:, 1:]  # (B*K, L-1) each
            prefix = bar_prefix.flatten(0, 1)  # (B*K, P, C)
        p = self.cfg.vae.word_dropout
        if self.training and p > 0:
            # Word dropout (Bowman et al. 2016): PAD stands for "unknown token"; BOS is kept.
            drop = torch.rand(inp.shape, generator=generator, device=inp.device) < p
            drop[:, 0] = False
            inp = inp.masked_fill(drop, PAD_ID)
        out = self.decoder(inp, tgt, prefix=prefix)
        return out.logits, tgt, out.loss, out.hidden, bow

    def bar_prefix(self, latents: Latents) -> torch.Tensor:
        """Conductor prefixes, one set per bar: (B, K, P, C). Only with decoder=conductor."""
        if self.conductor is None:
            raise ValueError("bar_prefix needs model.vae.decoder=conductor")
        return self.conductor(latents.z_g, latents.z_b)[0]

    def posterior_mean(self, post: Posterior) -> Latents:
        """The posterior means as latents (no sampling): reconstruction and interpolation use this."""
        return Latents(post.mu_g, post.mu_b)

    @torch.no_grad()
    def decode(
        self,
        latents: Latents,
        max_tokens: int,
        *,
        bos_id: int = 1,
        eos_id: int | None = 2,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Autoregressive decode with the decoder's KV cache; temperature 0 = greedy.

        Returns one token list per latent row, starting with BOS and stopping after EOS. With the
        conductor, every bar is decoded as its own row (up to ``max_tokens`` tokens each, stopping
        at its EOS) and the K bodies are joined into one segment ``BOS bar_0 .. bar_K-1 EOS``.
        """
        kw = {"bos_id": bos_id, "eos_id": eos_id, "temperature": temperature, "top_p": top_p}
        if self.conductor is None:
            return self._decode_prefix(self.prefix(latents), max_tokens, generator=generator, **kw)
        B, K = latents.z_g.shape[0], self.conductor.num_bars
        prefix = self.bar_prefix(latents).flatten(0, 1)  # (B*K, P, C)
        bars = self._decode_prefix(prefix, max_tokens, generator=generator, **kw)
        out = []
        for b in range(B):
            body = []
            for row in bars[b * K : (b + 1) * K]:
                body += [t for t in row[1:] if t != eos_id]
            out.append([bos_id, *body] + ([eos_id] if eos_id is not None else []))
        return out

    @torch.no_grad()
    def _decode_prefix(
        self,
        prefix: torch.Tensor,
        max_tokens: int,
        *,
        bos_id: int,
        eos_id: int | None,
        temperature: float,
        top_p: float,
        generator: torch.Generator | None,
    ) -> list[list[int]]:
        """Cached autoregressive decode of one row per prefix (B, P, C)."""
        B = prefix.shape[0]
        total = prefix.shape[1] + max_tokens + 1
        cache = self.decoder.new_cache(B, total)
        cur = torch.full((B, 1), bos_id, dtype=torch.long, device=prefix.device)  # (B, 1)
        seqs = [cur]
        done = torch.zeros(B, dtype=torch.bool, device=prefix.device)
        out = self.decoder(cur, cache=cache, prefix=prefix, logits_for="last")
        for _ in range(max_tokens):
            logits = out.logits[:, -1].float()  # (B, V)
            # PAD and BOS never follow BOS inside a segment; an undertrained decoder may rank them first
            logits[:, [PAD_ID, bos_id]] = float("-inf")
            nxt = _pick(logits, temperature, top_p, generator)  # (B,)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            seqs.append(nxt[:, None])
            if bool(done.all()):
                break
            out = self.decoder(nxt[:, None], cache=cache, logits_for="last")
        ids = torch.cat(seqs, dim=1).tolist()  # (B, <=max_tokens+1)
        result = []
        for row in ids:
            if eos_id is not None and eos_id in row[1:]:
                row = row[: row.index(eos_id, 1) + 1]
            result.append(row)
        return result

    # -- latent-space operations -----------------------------------------------------------

    @torch.no_grad()
    def sample_latents(self, num: int, generator: torch.Generator | None = None) -> Latents:
        """Draw latents from the prior (global, then bars given the global)."""
        z_g = self.prior.sample(num, generator).to(self.global_to_prefix.weight.device)
        if not self.num_bars:
            return Latents(z_g)
        mu, logvar = self.bar_prior_params(z_g)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        return Latents(z_g, mu + eps * (0.5 * logvar).exp())

    @torch.no_grad()
    def sample(
        self, num: int, max_tokens: int, generator: torch.Generator | None = None, **decode_kw
    ) -> list[list[int]]:
        """Decode ``num`` segments from prior samples."""
        return self.decode(
            self.sample_latents(num, generator), max_tokens, generator=generator, **decode_kw
        )

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


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * (0.5 * logvar).exp()


def bar_positions(bar_ids: torch.Tensor, num_bars: int) -> torch.Tensor:
    """Place of every token within its bar, 0-based: (B, T) -> (B, T); 0 on padding (bar -1)."""
    onehot = F.one_hot(bar_ids.clamp(0, num_bars - 1), num_bars) * (bar_ids >= 0)[..., None]
    return ((onehot.cumsum(1) - 1).clamp_min(0) * onehot).sum(-1)  # (B, T)


def even_bar_ids(mask: torch.Tensor, num_bars: int) -> torch.Tensor:
    """Fallback bar index when real bar lines are unknown: valid tokens split into equal runs."""
    pos = mask.long().cumsum(1) - 1  # (B, T)
    n = mask.long().sum(1, keepdim=True).clamp_min(1)  # (B, 1)
    ids = (pos * num_bars) // n
    return torch.where(mask, ids.clamp(0, num_bars - 1), torch.full_like(ids, -1))


def cut_segments(
    ids: np.ndarray,
    beats: np.ndarray,
    bars: int,
    beats_per_bar: int,
    stride_bars: int,
    special: set[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens, bar index per token) for each window of ``bars`` bars starting on a bar line.

    ``beats`` is the time in beats after each token (``MusicTokenizer.token_beats``); a token
    belongs to the bar in which it starts, i.e. the bar of the time *before* it. Special tokens
    (BOS/EOS/PAD) are dropped; the caller adds its own BOS/EOS.
    """
    before = np.concatenate([[0.0], beats[:-1]]) if len(beats) else beats
    bar_of = np.floor(before / beats_per_bar + 1e-9).astype(np.int64)
    keep = ~np.isin(ids, list(special))
    ids, bar_of = ids[keep], bar_of[keep]
    if not len(ids):
        return []
    last = int(bar_of.max())
    out = []
    for start in range(0, max(1, last - bars + 2), stride_bars):
        sel = (bar_of >= start) & (bar_of < start + bars)
        if sel.any():
            out.append((ids[sel], bar_of[sel] - start))
    return out


def pack_segment(
    ids: np.ndarray, bars: np.ndarray, num_bars: int, length: int, bos: int, eos: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """One encoder row: ``BOS ids EOS`` padded to ``length``, and its bar index (-1 on PAD)."""
    tokens = np.full(length, pad, dtype=np.int64)
    bar_ids = np.full(length, -1, dtype=np.int64)
    body = ids[: length - 2]
    n = len(body)
    tokens[0], tokens[1 : 1 + n], tokens[1 + n] = bos, body, eos
    bar_ids[0], bar_ids[1 : 1 + n], bar_ids[1 + n] = 0, bars[: length - 2], num_bars - 1
    return tokens, bar_ids


def _pick(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = F.softmax(logits / temperature, -1)  # (B, V)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def build_vae(cfg: ModelConfig, vocab_size: int | None = None) -> MusicVAE:
    """Wire a MusicVAE from config: MusicTransformer decoder + non-causal TransformerBlocks."""
    from aurl.models.blocks import make_block, make_norm
    from aurl.models.transformer import MusicTransformer

    if vocab_size:
        cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
    if cfg.vocab_size <= 0:
        raise ValueError(
            "model.vocab_size must be set (> 0) to build a VAE; take it from the tokenizer"
        )
    decoder = MusicTransformer(cfg)
    blocks = nn.ModuleList(make_block(cfg, causal=False) for _ in range(cfg.vae.encoder_layers))
    return MusicVAE(cfg, decoder, blocks, make_norm(cfg.norm, cfg.d_model))
