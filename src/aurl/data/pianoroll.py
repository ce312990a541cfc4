"""Notes <-> piano-roll grids: the input and output of the VAE's ``grid`` decoder (issue 13).

Shape legend:
    N  notes      T  grid steps in a segment (bars x beats_per_bar x steps_per_beat)
    P  pitches in the grid (pitch_high - pitch_low)

A roll is a (T, P) array of cell classes: OFF (silent), ONSET (a note starts here) and HOLD (a
note started earlier still sounds). ONSET vs HOLD keeps repeated notes apart (two quarter notes
on one pitch are ONSET HOLD HOLD HOLD ONSET ..., not one half note), so notes -> roll -> notes is
exact for notes on the grid within the pitch range (tested). Unisons (two voices on one pitch)
become one note, as they do in MIDI.

Notes are int arrays ``(N, 3)`` of ``(onset step, end step, pitch)`` on the roll's grid. Bach
chorales at 4 steps per beat (16th notes): 47 of 124,560 onsets of the prepared corpus are off
that grid (``benchmarks/bench_grid_resolution.py``), so 16ths lose almost nothing.

Why our own code: MidiTok and symusic have piano-roll exports (``Score.pianoroll``), but not the
onset/hold classes per cell nor the way back from predicted classes to notes; both are a few
lines of NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OFF, ONSET, HOLD = 0, 1, 2
CLASSES = 3


@dataclass(frozen=True)
class RollSpec:
    """The grid of one segment."""

    bars: int = 2
    beats_per_bar: int = 4
    steps_per_beat: int = 4
    pitch_low: int = 24
    pitch_high: int = 97  # one past the highest pitch

    @property
    def steps_per_bar(self) -> int:
        return self.beats_per_bar * self.steps_per_beat

    @property
    def steps(self) -> int:
        return self.bars * self.steps_per_bar

    @property
    def pitches(self) -> int:
        return self.pitch_high - self.pitch_low


def score_notes(score, steps_per_beat: int) -> np.ndarray:
    """Every note of a ``symusic.Score`` (all tracks) on a grid of ``steps_per_beat`` per quarter:
    (N, 3) int64 ``(onset, end, pitch)`` sorted by onset then pitch. A note keeps at least one step.
    """
    tpq = score.ticks_per_quarter
    rows = [(n.time, n.end, n.pitch) for t in score.tracks if not t.is_drum for n in t.notes]
    if not rows:
        return np.zeros((0, 3), dtype=np.int64)
    a = np.asarray(rows, dtype=np.float64)
    on = np.floor(a[:, 0] * steps_per_beat / tpq + 0.5).astype(np.int64)
    end = np.floor(a[:, 1] * steps_per_beat / tpq + 0.5).astype(np.int64)
    notes = np.stack([on, np.maximum(end, on + 1), a[:, 2].astype(np.int64)], 1)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def inside(notes: np.ndarray, spec: RollSpec) -> np.ndarray:
    """(N,) bool: the notes whose pitch lies in the roll's range."""
    return (notes[:, 2] >= spec.pitch_low) & (notes[:, 2] < spec.pitch_high)


def window_starts(notes: np.ndarray, spec: RollSpec, stride_bars: int) -> list[int]:
    """First bars of the windows :func:`cut_notes` makes: every ``stride_bars`` bars, skipping
    windows without a note onset."""
    if not len(notes):
        return []
    per_bar = spec.steps_per_bar
    bar_of = notes[:, 0] // per_bar
    last_bar = int(bar_of.max())
    starts = range(0, max(1, last_bar - spec.bars + 2), stride_bars)
    return [b for b in starts if ((bar_of >= b) & (bar_of < b + spec.bars)).any()]


def cut_notes(
    notes: np.ndarray, spec: RollSpec, stride_bars: int, starts: list[int] | None = None
) -> list[np.ndarray]:
    """Windows of ``spec.bars`` bars (first bars ``starts``, default :func:`window_starts`), each
    as notes relative to its start: a note belongs to the window in which it starts; ends are cut
    at the window's end."""
    if starts is None:
        starts = window_starts(notes, spec, stride_bars)
    per_bar, T = spec.steps_per_bar, spec.steps
    out = []
    for bar in starts:
        t0 = bar * per_bar
        sel = (notes[:, 0] >= t0) & (notes[:, 0] < t0 + T)
        seg = notes[sel].copy()
        seg[:, :2] -= t0
        seg[:, 1] = np.minimum(seg[:, 1], T)
        out.append(seg)
    return out


def to_roll(notes: np.ndarray, spec: RollSpec, shift: int = 0) -> np.ndarray:
    """(N, 3) notes of one segment -> (T, P) int64 classes; notes outside the pitch range (after
    transposing by ``shift`` semitones) are dropped. An onset wins over a hold in the same cell."""
    roll = np.zeros((spec.steps, spec.pitches), dtype=np.int64)
    for on, end, pitch in notes:
        p = int(pitch) + shift - spec.pitch_low
        if 0 <= p < spec.pitches and 0 <= on < spec.steps:
            held = roll[on + 1 : end, p]
            held[held == OFF] = HOLD
    for on, _, pitch in notes:  # onsets last, so a later note's onset is not overwritten by a hold
        p = int(pitch) + shift - spec.pitch_low
        if 0 <= p < spec.pitches and 0 <= on < spec.steps:
            roll[on, p] = ONSET
    return roll


def from_roll(roll: np.ndarray, spec: RollSpec) -> np.ndarray:
    """(T, P) classes -> (N, 3) notes ``(onset, end, pitch)``. A HOLD continues the note sounding
    on its pitch; a HOLD with no note sounding (a decoder may predict one) is dropped."""
    T, P = roll.shape
    notes = []
    for p in range(P):
        col = roll[:, p]
        start = -1
        for t in range(T + 1):
            c = col[t] if t < T else OFF
            if start >= 0 and c != HOLD:
                notes.append((start, t, p + spec.pitch_low))
                start = -1
            if c == ONSET:
                start = t
    if not notes:
        return np.zeros((0, 3), dtype=np.int64)
    out = np.asarray(notes, dtype=np.int64)
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def transpose_range(notes: np.ndarray, spec: RollSpec, low: int, high: int) -> tuple[int, int]:
    """The shifts in ``[low, high]`` that keep every note of ``notes`` inside the grid's range."""
    if not len(notes):
        return low, high
    lo = max(low, spec.pitch_low - int(notes[:, 2].min()))
    hi = min(high, spec.pitch_high - 1 - int(notes[:, 2].max()))
    return (lo, hi) if lo <= hi else (0, 0)


def notes_to_score(notes: np.ndarray, steps_per_beat: int, velocity: int = 80, tpq: int = 480):
    """(N, 3) grid notes -> a one-track piano ``symusic.Score`` (4/4, 120 bpm)."""
    from symusic import Note, Score, Track

    score = Score(tpq)
    track = Track(name="Piano", program=0, is_drum=False)
    step = tpq // steps_per_beat
    for on, end, pitch in notes:
        track.notes.append(Note(int(on) * step, int(end - on) * step, int(pitch), velocity))
    score.tracks.append(track)
    return score


def note_set(notes: np.ndarray) -> set[tuple[int, int]]:
    """{(onset, pitch)}: what reconstruction and interpolation note F1 compare."""
    return {(int(on), int(p)) for on, _, p in notes}


def note_f1(ref: set, hyp: set) -> float:
    """F1 of two note sets (1.0 when both are empty)."""
    if not ref and not hyp:
        return 1.0
    return 2 * len(ref & hyp) / (len(ref) + len(hyp))


# the grid VAE's segments (model.vae.grid_*)


def roll_spec(v) -> RollSpec:
    """The grid of a :class:`~aurl.config.VAEConfig` (``bars_per_segment``, ``grid_*``)."""
    return RollSpec(
        v.bars_per_segment, v.beats_per_bar, v.grid_steps_per_beat, v.grid_pitch_low,
        v.grid_pitch_high,
    )  # fmt: skip


def piece_notes(tokenizer, ids, steps_per_beat: int) -> np.ndarray:
    """A token sequence's notes on the roll grid: (N, 3) ``(onset, end, pitch)``."""
    return score_notes(tokenizer.decode(np.asarray(ids)), steps_per_beat)


def rolls_to_notes(cells, spec: RollSpec) -> list[np.ndarray]:
    """Decoded cell classes (B, T, P) -> one (N, 3) note array per row."""
    return [from_roll(row, spec) for row in cells.cpu().numpy()]
