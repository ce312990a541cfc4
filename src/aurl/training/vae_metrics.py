"""Reconstruction figures of a trained VAE on a prepared split (``aurl evaluate MODEL --split``).

Token VAEs (flat and conductor decoders) are measured here; the grid VAE's figures come from
:func:`aurl.training.grid_data.grid_metrics` with the same keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from aurl.models.grid_vae import GridVAE
from aurl.models.vae import Latents, MusicVAE, gaussian_kl
from aurl.training.vae_module import SegmentDataset, _split_pieces


def note_f1(tok, ref: list[int], hyp: list[int]) -> float:
    """F1 of the notes (onset tick, pitch) of two token lists; an undecodable ``hyp`` scores 0."""

    def notes(ids: list[int]) -> set[tuple[int, int]]:
        body = [i for i in ids if i not in (tok.pad_id, tok.bos_id, tok.eos_id)]
        score = tok.decode([tok.bos_id, *body, tok.eos_id])
        return {(int(n.time), int(n.pitch)) for t in score.tracks for n in t.notes}

    want = notes(ref)
    try:
        got = notes(hyp)
    except Exception:  # a greedy decode is free to be ungrammatical; it simply matches nothing
        got = set()
    if not want and not got:
        return 1.0
    hits = len(want & got)
    return 2 * hits / (len(want) + len(got))


@torch.no_grad()
def vae_metrics(
    bundle_or_model,
    prepared_data,
    split: str = "test",
    *,
    batch_size: int = 8,
    max_segments: int = 0,
    greedy_segments: int = 16,
) -> dict:
    """Reconstruction figures of a VAE on one split's non-overlapping segments.

    - ``recon_acc_teacher``: next-token accuracy, teacher-forced, z = posterior mean.
    - ``recon_acc_greedy``: greedy decode from the posterior mean compared position by position with
      the segment (first ``greedy_segments`` segments; decoding is the slow part). One inserted or
      dropped token shifts everything after it, so this figure is harsh;
      ``recon_note_f1_greedy`` compares the same decodes as notes (onset tick, pitch) instead.
    - ``bits_per_note``: teacher-forced NLL with z = posterior mean, in bits, divided by notes. It is
      a *reconstruction* NLL -log p(x | z=mu), not a marginal likelihood: it is not comparable with
      the LM's bits per note. ``elbo_bits_per_note`` (recon at mu + KL) is an upper bound on -log p(x)
      up to the one-sample approximation.
    - ``kl_global`` / ``kl_bar``: mean KL per segment (nats) of each latent group.
    - ``active_units_global`` / ``active_units_bar``: dimensions whose posterior mean varies over the
      split with variance > 0.01 (Burda et al. 2016).
    - ``active_units_vs_noise_global`` / ``_bar``: dimensions whose posterior mean varies over the
      split by more than the posterior's own noise (Var_x[mu] > E_x[sigma^2]): a dimension whose
      means move by less than its sampling noise tells the decoder little (issue 13).
    - ``z_usage_nats_per_segment``: how much worse the teacher-forced NLL gets when each segment is
      decoded from another segment's posterior mean (the batch rolled by one): ~0 for a decoder
      that ignores z, large for one that takes the music from it.
    - ``recon_note_f1`` (= ``recon_note_f1_greedy``) and ``kl_per_segment`` (per latent group and
      total, nats): the keys ``aurl evaluate`` promises for a VAE.
    """
    model: MusicVAE = getattr(bundle_or_model, "model", bundle_or_model)
    if isinstance(model, GridVAE):
        from aurl.training.grid_data import grid_metrics

        return grid_metrics(model, prepared_data, split, batch_size=max(batch_size, 32))
    tok = prepared_data.tokenizer
    cfg = model.cfg
    ds = SegmentDataset(
        _split_pieces(prepared_data, split), tok, cfg.vae, cfg.max_seq_len, shuffle=False
    )
    n = len(ds) if max_segments <= 0 else min(len(ds), max_segments)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = correct = count = notes = 0.0
    kl_g = kl_b = 0.0
    mus_g, mus_b, vars_g, vars_b = [], [], [], []
    greedy_hits = greedy_total = 0
    swap_gap, swap_segments = 0.0, 0
    f1s: list[float] = []
    try:
        for start in range(0, n, batch_size):
            rows = [ds[i] for i in range(start, min(n, start + batch_size))]
            tokens = torch.stack([r["tokens"] for r in rows]).to(device)
            bar_ids = torch.stack([r["bar_ids"] for r in rows]).to(device)
            mask = tokens != 0
            post = model.encode(tokens, mask, bar_ids)
            z = model.posterior_mean(post)
            logits, tgt = model.teacher_forced(tokens, z, bar_ids)[:2]  # (B', T', V), (B', T')
            logits = logits.float()
            valid = tgt != 0
            ce = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")  # (B, T-1)
            nll += float((ce * valid).sum())
            if len(rows) > 1:  # the same segments decoded from their neighbours' latents
                other = Latents(z.z_g.roll(1, 0), None if z.z_b is None else z.z_b.roll(1, 0))
                logits_o = model.teacher_forced(tokens, other, bar_ids)[0].float()
                ce_o = F.cross_entropy(logits_o.transpose(1, 2), tgt, reduction="none")
                swap_gap += float(((ce_o - ce) * valid).sum())
                swap_segments += len(rows)
            correct += float(((logits.argmax(-1) == tgt) & valid).sum())
            count += float(valid.sum())
            notes += sum(tok.count_notes(t[t != 0].tolist()) for t in tokens.cpu())
            zeros = torch.zeros_like(post.mu_g)
            kl_g += float(gaussian_kl(post.mu_g, post.logvar_g, zeros, zeros).sum())
            mus_g.append(post.mu_g.cpu())
            vars_g.append(post.logvar_g.exp().cpu())
            if post.mu_b is not None:
                mu_p, lv_p = model.bar_prior_params(post.mu_g)
                kl_b += float(gaussian_kl(post.mu_b, post.logvar_b, mu_p, lv_p).sum())
                mus_b.append(post.mu_b.flatten(0, 1).cpu())
                vars_b.append(post.logvar_b.exp().flatten(0, 1).cpu())
            if start < greedy_segments:
                k = min(len(rows), greedy_segments - start)
                length = int(mask.sum(1).max())
                decoded = model.decode(
                    z.select(slice(0, k)), length - 1, bos_id=tok.bos_id, eos_id=tok.eos_id
                )
                for row, ids in zip(tokens[:k].cpu(), decoded, strict=True):
                    ref = row[row != 0].tolist()[1:]
                    hyp = ids[1:]
                    greedy_hits += sum(a == b for a, b in zip(ref, hyp, strict=False))
                    greedy_total += len(ref)
                    f1s.append(note_f1(tok, ref, hyp))
    finally:
        model.train(was)

    f1 = sum(f1s) / max(len(f1s), 1)
    return {
        "split": split,
        "segments": n,
        "tokens": int(count),
        "notes": int(notes),
        "recon_acc_teacher": correct / max(count, 1.0),
        "recon_acc_greedy": greedy_hits / max(greedy_total, 1),
        "recon_note_f1_greedy": f1,
        "recon_note_f1": f1,
        "greedy_segments": min(n, greedy_segments),
        "recon_nll_per_token": nll / max(count, 1.0),
        "z_usage_nats_per_segment": swap_gap / max(swap_segments, 1),
        **latent_figures(cfg.vae, n, nll, notes, kl_g, kl_b, (mus_g, vars_g), (mus_b, vars_b)),
    }


def active_units(mus: list[Tensor], variances: list[Tensor] | None = None) -> int:
    """Dimensions whose posterior mean varies over the split by more than 0.01 (Burda et al.
    2016), or with ``variances`` by more than the posterior's own mean variance."""
    if not mus or len(torch.cat(mus)) < 2:
        return 0
    m = torch.cat(mus)
    floor = torch.cat(variances).mean(0) if variances is not None else 0.01
    return int((m.var(0) > floor).sum())


def latent_figures(
    vcfg, segments: int, nll: float, notes: float, kl_g: float, kl_b: float, glob, bar
) -> dict:
    """The figures every VAE reports from split totals (nats) and per-segment (mus, variances)
    of each latent group: bits per note, KL per group, active units (both ways)."""
    n = max(segments, 1)
    bits, kl_total = nll / math.log(2), kl_g + kl_b
    return {
        "bits_per_note": bits / max(notes, 1.0),
        "elbo_bits_per_note": (bits + kl_total / math.log(2)) / max(notes, 1.0),
        "kl_global": kl_g / n,
        "kl_bar": kl_b / n,
        "active_units_global": active_units(glob[0]),
        "active_units_bar": active_units(bar[0]),
        "active_units_vs_noise_global": active_units(*glob),
        "active_units_vs_noise_bar": active_units(*bar),
        "kl_per_segment": {"global": kl_g / n, "bar": kl_b / n, "total": kl_total / n},
        "decoder": vcfg.decoder,
        "latent_dims": {"global": vcfg.latent_dim, "bar": vcfg.bar_latent_dim},
    }
