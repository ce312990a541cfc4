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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aurl.config import ModelConfig
from aurl.models.conductor import Conductor, bag_of_notes_nll, bar_rows
from aurl.models.latent_space import (  # noqa: F401  (re-exported: the VAE's public names)
    GaussianPrior,
    LatentLadder,
    Latents,
    MixturePrior,
    Posterior,
    build_prior,
    gaussian_kl,
    gaussian_log_prob,
    reparameterize,
    slerp,
)

PAD_ID = 0
"""The tokenizer's PAD id (also ignored by MusicTransformer's loss)."""
BOS_ID, EOS_ID = 1, 2
"""The tokenizer's BOS and EOS ids (``aurl.tokenization``: PAD 0, BOS 1, EOS 2)."""


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
# the model


class MusicVAE(LatentLadder):
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
        self.init_ladder(v, C)
        self.to_global = nn.Linear(C, 2 * D)
        self.global_to_prefix = nn.Linear(D, C)
        if E > 0:
            self.to_bar = nn.Linear(C + D, 2 * E)
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

    # -- latent-space operations (sample_latents, interpolate, vary: LatentLadder)

    @torch.no_grad()
    def sample(
        self, num: int, max_tokens: int, generator: torch.Generator | None = None, **decode_kw
    ) -> list[list[int]]:
        """Decode ``num`` segments from prior samples."""
        return self.decode(
            self.sample_latents(num, generator), max_tokens, generator=generator, **decode_kw
        )


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
    if cfg.vae.decoder == "grid":  # the piano-roll VAE has no token decoder (models/grid_vae.py)
        from aurl.models.grid_vae import GridVAE

        return GridVAE(cfg)
    if cfg.vocab_size <= 0:
        raise ValueError(
            "model.vocab_size must be set (> 0) to build a VAE; take it from the tokenizer"
        )
    decoder = MusicTransformer(cfg)
    blocks = nn.ModuleList(make_block(cfg, causal=False) for _ in range(cfg.vae.encoder_layers))
    return MusicVAE(cfg, decoder, blocks, make_norm(cfg.norm, cfg.d_model))
