"""Piano-roll segments for the grid VAE (``model.vae.decoder=grid``) and its reconstruction figures.

Shape legend:
    B  batch    T  grid steps per segment    P  pitches of the roll    D / E  latent sizes

The prepared token data stays the source: each piece is decoded to a Score once, its notes are put
on the roll's grid (``aurl.data.pianoroll``) and cut into windows of ``bars_per_segment`` bars, so
the grid VAE trains on exactly the music the token models see.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from aurl.config import VAEConfig
from aurl.data import pianoroll as roll_io
from aurl.data.pianoroll import piece_notes, roll_spec, rolls_to_notes
from aurl.models.latent_space import Latents, gaussian_kl

log = logging.getLogger(__name__)


class RollDataset(Dataset):
    """Segments of ``bars_per_segment`` bars from a split, as piano rolls.

    Item ``i`` is a pure function of ``(seed, i)`` (as :class:`~aurl.training.vae_module.SegmentDataset`):
    segment ``perm_{i // n}[i % n]``, transposed (``augment``) by a shift drawn from ``(seed, i)``.
    """

    def __init__(
        self,
        pieces: list[np.ndarray],
        tokenizer,
        vcfg: VAEConfig,
        *,
        stride_bars: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        augment: bool = False,
    ) -> None:
        self.spec = roll_spec(vcfg)
        stride = stride_bars or vcfg.bars_per_segment
        self.segments: list[np.ndarray] = []
        dropped = total = 0
        for ids in pieces:
            notes = piece_notes(tokenizer, ids, self.spec.steps_per_beat)
            total += len(notes)
            inside = roll_io.inside(notes, self.spec)
            dropped += int((~inside).sum())
            self.segments.extend(roll_io.cut_notes(notes[inside], self.spec, stride))
        if not self.segments:
            raise ValueError("no segments: the split has no notes; check the prepared data")
        if dropped:
            log.warning(
                "%d of %d notes lie outside the roll's pitches %d..%d and are left out",
                dropped, total, self.spec.pitch_low, self.spec.pitch_high - 1,
            )  # fmt: skip
        self.seed, self.shuffle = seed, shuffle
        self.transpose = vcfg.grid_transpose if augment else 0

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        n = len(self.segments)
        j = i % n
        rng = np.random.default_rng((self.seed, i // n))
        if self.shuffle:
            j = int(rng.permutation(n)[j])
        notes = self.segments[j]
        shift = 0
        if self.transpose:
            lo, hi = roll_io.transpose_range(notes, self.spec, -self.transpose, self.transpose)
            shift = int(np.random.default_rng((self.seed, i, 1)).integers(lo, hi + 1))
        roll = roll_io.to_roll(notes, self.spec, shift)
        return {"roll": torch.from_numpy(roll), "notes": torch.tensor(len(notes))}


@torch.no_grad()
def grid_metrics(model, prepared_data, split: str = "test", *, batch_size: int = 32) -> dict:
    """Reconstruction figures of a grid VAE on one split's non-overlapping segments.

    - ``recon_note_f1``: notes (onset, pitch) decoded greedily (argmax per cell) from the posterior
      mean vs the segment's notes **at the tokenizer's resolution** (a source onset off the roll's
      grid counts as missed), every segment of the split.
    - ``bits_per_note``: the roll's cell NLL at z = posterior mean, in bits, divided by notes: a
      reconstruction NLL per note of the *roll* model, not comparable with token bits per note.
    - ``kl_global`` / ``kl_bar`` / ``kl_per_segment``, ``active_units_*`` (variance of the means >
      0.01, and > the posterior's own mean variance), ``z_usage_nats_per_segment`` (NLL cost of
      decoding each segment from its neighbour's latents) as for the token VAE.
    """
    tok = prepared_data.tokenizer
    v = model.cfg.vae
    from aurl.training.vae_module import _split_pieces  # the split reader the token VAE uses

    pieces = _split_pieces(prepared_data, split)
    ds = RollDataset(pieces, tok, v, shuffle=False)
    fine = max(int(getattr(tok.cfg, "steps_per_beat", v.grid_steps_per_beat)), 1)
    ratio = fine // v.grid_steps_per_beat if fine % v.grid_steps_per_beat == 0 else 0
    refs = _fine_segments(pieces, tok, v, fine) if ratio else None
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = swap = 0.0
    notes_total = 0
    kl_g = kl_b = 0.0
    mus_g, mus_b, vars_g, vars_b, f1s = [], [], [], [], []
    try:
        for start in range(0, len(ds), batch_size):
            idx = range(start, min(len(ds), start + batch_size))
            roll = torch.stack([ds[i]["roll"] for i in idx]).to(device)  # (B, T, P)
            post = model.encode(roll)
            z = model.posterior_mean(post)
            logits = model.logits(z)
            seg_nll = model.cell_nll(logits, roll)  # (B,)
            nll += float(seg_nll.sum())
            if len(idx) > 1:
                other = Latents(z.z_g.roll(1, 0), z.z_b.roll(1, 0))
                swap += float((model.cell_nll(model.logits(other), roll) - seg_nll).sum())
            notes_total += sum(len(ds.segments[i]) for i in idx)
            zeros = torch.zeros_like(post.mu_g)
            kl_g += float(gaussian_kl(post.mu_g, post.logvar_g, zeros, zeros).sum())
            mu_p, lv_p = model.bar_prior_params(post.mu_g)
            kl_b += float(gaussian_kl(post.mu_b, post.logvar_b, mu_p, lv_p).sum())
            mus_g.append(post.mu_g.cpu())
            vars_g.append(post.logvar_g.exp().cpu())
            mus_b.append(post.mu_b.flatten(0, 1).cpu())
            vars_b.append(post.logvar_b.exp().flatten(0, 1).cpu())
            decoded = rolls_to_notes(logits.argmax(-1), ds.spec)
            for i, hyp in zip(idx, decoded, strict=True):
                if refs is not None:
                    ref = refs[i]
                    got = {(on * ratio, p) for on, p in roll_io.note_set(hyp)}
                else:
                    ref, got = roll_io.note_set(ds.segments[i]), roll_io.note_set(hyp)
                f1s.append(roll_io.note_f1(ref, got))
    finally:
        model.train(was)
    from aurl.training.vae_metrics import latent_figures

    n = len(ds)
    f1 = float(np.mean(f1s)) if f1s else 0.0
    return {
        "split": split,
        "segments": n,
        "notes": notes_total,
        "recon_note_f1": f1,
        "recon_note_f1_greedy": f1,
        "greedy_segments": n,
        "recon_nll_per_segment": nll / max(n, 1),
        "z_usage_nats_per_segment": swap / max(n, 1),
        **latent_figures(v, n, nll, notes_total, kl_g, kl_b, (mus_g, vars_g), (mus_b, vars_b)),
        "grid": {
            "steps_per_beat": v.grid_steps_per_beat,
            "pitches": [v.grid_pitch_low, v.grid_pitch_high - 1],
        },
    }


@torch.no_grad()
def posterior_means(model, prepared_data, split: str = "train", batch_size: int = 256) -> Latents:
    """Posterior means of a split's segments (every ``segment_stride_bars``, no augmentation)."""
    v = model.cfg.vae
    from aurl.training.vae_module import _split_pieces

    ds = RollDataset(
        _split_pieces(prepared_data, split), prepared_data.tokenizer, v,
        stride_bars=v.segment_stride_bars, shuffle=False,
    )  # fmt: skip
    was = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, len(ds), batch_size):
            roll = torch.stack(
                [ds[i]["roll"] for i in range(start, min(len(ds), start + batch_size))]
            )
            parts.append(model.posterior_mean(model.encode(roll.to(model.device))))
    finally:
        model.train(was)
    return Latents(torch.cat([p.z_g for p in parts]), torch.cat([p.z_b for p in parts]))


def _fine_segments(pieces, tok, v: VAEConfig, fine: int) -> list[set[tuple[int, int]]]:
    """The same segments as :class:`RollDataset` (shuffle off), as (onset, pitch) sets at
    ``fine`` steps per beat: the reference a reconstruction is scored against."""
    spec = roll_spec(v)
    fine_spec = roll_io.RollSpec(
        spec.bars, spec.beats_per_bar, fine, spec.pitch_low, spec.pitch_high
    )
    out = []
    for ids in pieces:
        score = tok.decode(np.asarray(ids))
        coarse = roll_io.score_notes(score, spec.steps_per_beat)
        notes = roll_io.score_notes(score, fine)
        coarse, notes = coarse[roll_io.inside(coarse, spec)], notes[roll_io.inside(notes, spec)]
        starts = roll_io.window_starts(coarse, spec, spec.bars)  # the windows RollDataset cuts
        out.extend(roll_io.note_set(s) for s in roll_io.cut_notes(notes, fine_spec, 0, starts))
    return out
