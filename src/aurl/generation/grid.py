"""Grid VAE segments in and out (``model.vae.decoder=grid``, ``models/grid_vae.py``).

Files are encoded from their notes on the roll's grid (``data/pianoroll.py``); a decoded roll
becomes notes, then tokens of the bundle's tokenizer, padded with time shifts to the segment's
length so that segments join on the bar grid like the token decoders' segments.
``generation/latent.py`` (``aurl sample | interpolate | vary``) calls these for grid models.
"""

from __future__ import annotations

import numpy as np
import torch

from aurl.data import pianoroll as roll_io
from aurl.data.pianoroll import piece_notes, roll_spec, rolls_to_notes
from aurl.generation import constraints as C
from aurl.models.grid_vae import GridVAE
from aurl.models.latent_space import Latents


def roll_segments(model: GridVAE, tok, ids, max_segments: int = 0) -> list[np.ndarray]:
    """The first ``max_segments`` (0 = all) non-overlapping segments of a token sequence as the
    grid VAE sees them: notes ``(onset, end, pitch)`` on its grid, relative to each segment."""
    spec = roll_spec(model.cfg.vae)
    notes = piece_notes(tok, ids, spec.steps_per_beat)
    notes = notes[roll_io.inside(notes, spec)]
    segs = roll_io.cut_notes(notes, spec, spec.bars)
    return segs[:max_segments] if max_segments > 0 else segs


def encode_rolls(model: GridVAE, tok, ids, max_segments: int) -> Latents:
    """Posterior means of the first ``max_segments`` segments of a token sequence."""
    segs = roll_segments(model, tok, ids, max_segments)
    if not segs:
        raise ValueError("no notes to encode (none inside the model's pitch range)")
    spec = roll_spec(model.cfg.vae)
    rolls = torch.from_numpy(np.stack([roll_io.to_roll(s, spec) for s in segs]))
    with torch.no_grad():
        post = model.encode(rolls.to(model.device))
    return model.posterior_mean(post)


def decode_grid(
    model: GridVAE, tok, latents: Latents, temperature: float, seed: int
) -> list[list[int]]:
    """Grid decoding: one segment per latent row (tokens without BOS/EOS), each exactly
    ``bars_per_segment`` bars long. Temperature 0 takes each cell's most likely class; above 0
    every cell is drawn on its own (row ``i`` with seed ``seed + i``), which adds scattered notes:
    variety is better drawn from the latents (``aurl sample`` decodes the grid at temperature 0
    unless told otherwise)."""
    spec = roll_spec(model.cfg.vae)
    vocab = C.Vocab.from_tokenizer(tok)
    rows = []
    for i in range(latents.z_g.shape[0]):
        gen = torch.Generator(device="cpu").manual_seed(seed + i)
        cells = model.decode_cells(latents.select(i), temperature, gen)
        notes = rolls_to_notes(cells, spec)[0]
        ids = tok.encode(roll_io.notes_to_score(notes, spec.steps_per_beat))
        body = [t for t in ids if t not in (tok.bos_id, tok.eos_id, tok.pad_id)]
        rows.append(pad_time(tok, vocab, body, float(spec.bars * spec.beats_per_bar)))
    return rows


def pad_time(tok, vocab: C.Vocab, body: list[int], beats: float) -> list[int]:
    """``body`` followed by the time shifts that bring it to ``beats`` (largest first)."""
    shifts = sorted(
        ((float(vocab.beats[i]), i) for i in range(vocab.size) if vocab.types[i] == "TimeShift"),
        reverse=True,
    )
    if not shifts:
        raise ValueError(
            f"the grid VAE writes {vocab.kind} tokens by padding with TimeShift tokens; "
            "train it on MIDILike or TSD data"
        )
    now = float(tok.token_beats([tok.bos_id, *body])[-1]) if body else 0.0
    left = beats - now
    out = list(body)
    for value, i in shifts:
        while left >= value - C.TIME_EPS:
            out.append(i)
            left -= value
    return out
