"""Seeded score augmentations: ``f(score, ..., rng) -> score``, input never modified.

Randomness comes only from an explicit ``numpy.random.Generator`` so a sample is reproducible
from its seed. Drum tracks are never transposed (their "pitch" names a sound, GM percussion map).
Token-level transposition (an id offset, cheaper per sample) lives with the tokenizer/dataset.
"""

from __future__ import annotations

import numpy as np
import symusic
from symusic import Tempo

from aurl.data.transforms import note_arrays, require_ticks, set_notes

__all__ = [
    "humanize",
    "random_augment",
    "random_time_stretch",
    "random_transpose",
    "scale_velocity",
    "substitute_instruments",
    "swing",
    "time_stretch",
    "transpose",
    "valid_transpositions",
]


def _pitched_range(score: symusic.Score) -> tuple[int, int] | None:
    """(lowest, highest) pitch over pitched tracks, or None when there are no pitched notes."""
    pitches = [note_arrays(t)["pitch"] for t in score.tracks if not t.is_drum and t.note_num()]
    if not pitches:
        return None
    allp = np.concatenate(pitches)
    return int(allp.min()), int(allp.max())


def valid_transpositions(
    score: symusic.Score, max_shift: int, low: int = 0, high: int = 128
) -> list[int]:
    """Shifts in ``-max_shift..max_shift`` that keep every pitched note in ``low <= p < high``."""
    span = _pitched_range(score)
    if span is None:
        return [0]
    lo, hi = span
    return [s for s in range(-max_shift, max_shift + 1) if lo + s >= low and hi + s < high]


def transpose(score: symusic.Score, semitones: int, low: int = 0, high: int = 128) -> symusic.Score:
    """Shift every pitched note by ``semitones``; drums untouched. Raises ``ValueError`` naming
    the offending pitch when a note would leave ``low <= p < high``."""
    require_ticks(score, "transpose")
    span = _pitched_range(score)
    if span is not None:
        lo, hi = span
        if lo + semitones < low or hi + semitones >= high:
            raise ValueError(
                f"transpose by {semitones:+d} moves pitches {lo}..{hi} outside {low}..{high - 1}; "
                "pick a shift from valid_transpositions()"
            )
    out = score.copy()
    if semitones:
        for track in out.tracks:
            if not track.is_drum:
                track.shift_pitch(semitones, inplace=True)
    return out


def random_transpose(
    score: symusic.Score, max_shift: int, rng: np.random.Generator, low: int = 0, high: int = 128
) -> tuple[symusic.Score, int]:
    """Transpose by a shift drawn uniformly from the valid ones (so none is clipped); returns
    ``(score, shift)``; a piece already spanning the whole range gets shift 0."""
    shifts = valid_transpositions(score, max_shift, low, high)
    if not shifts:
        raise ValueError(f"score already has pitches outside {low}..{high - 1}; clamp_pitch first")
    shift = int(rng.choice(shifts))
    return transpose(score, shift, low, high), shift


def time_stretch(score: symusic.Score, factor: float) -> symusic.Score:
    """Play ``factor`` times faster (1.1 = 10 % faster) by scaling every tempo event; note ticks are
    unchanged, so the piece stays on its grid and its token sequence changes only in tempo tokens."""
    require_ticks(score, "time_stretch")
    if not factor > 0:
        raise ValueError(f"time-stretch factor={factor} must be > 0")
    out = score.copy()
    t = out.tempos.numpy()
    if len(t["time"]) == 0:  # MIDI default: 120 quarters per minute until a tempo event
        out.tempos.append(Tempo(0, qpm=120.0 * factor))
        return out
    mspq = np.clip(np.rint(t["mspq"] / factor), 1, 2**24 - 1).astype(np.int32)  # 24-bit MIDI field
    out.tempos = Tempo.from_numpy(t["time"], mspq)
    return out


def random_time_stretch(
    score: symusic.Score, max_change: float, rng: np.random.Generator
) -> tuple[symusic.Score, float]:
    """Stretch by a factor drawn uniformly from ``1 ± max_change`` (0.2 -> 0.8..1.2)."""
    if not 0 <= max_change < 1:
        raise ValueError(f"max_change={max_change} must be in [0, 1)")
    factor = float(rng.uniform(1 - max_change, 1 + max_change))
    return time_stretch(score, factor), factor


def scale_velocity(score: symusic.Score, scale: float = 1.0, shift: int = 0) -> symusic.Score:
    """``velocity * scale + shift``, clipped to 1..127, on every track (drums included)."""
    require_ticks(score, "scale_velocity")
    if not scale > 0:
        raise ValueError(f"velocity scale={scale} must be > 0")
    out = score.copy()
    for track in out.tracks:
        n = note_arrays(track)
        n["velocity"] = np.clip(np.rint(n["velocity"] * scale + shift), 1, 127).astype(np.int64)
        set_notes(track, n)
    return out


def substitute_instruments(
    score: symusic.Score, rng: np.random.Generator, probability: float = 0.5
) -> symusic.Score:
    """With ``probability`` per pitched track, swap its program for another of the same General
    MIDI family (``program // 8``: pianos, organs, guitars, basses, ...). Drum kits untouched."""
    require_ticks(score, "substitute_instruments")
    if not 0 <= probability <= 1:
        raise ValueError(f"probability={probability} must be in [0, 1]")
    out = score.copy()
    for track in out.tracks:
        if track.is_drum:
            continue
        draw, member = rng.random(), int(rng.integers(7))  # both drawn always: stable streams
        if draw < probability:
            family, own = divmod(int(track.program), 8)
            track.program = family * 8 + (member if member < own else member + 1)
    return out


def swing(score: symusic.Score, amount: float, unit_beats: float = 1.0) -> symusic.Score:
    """Delay the second half of each ``unit_beats`` span: the midpoint moves from 1/2 to
    ``1/2 + amount/6`` of the span, so ``amount=1`` is triplet swing (2:1) and 0 is straight.
    ``unit_beats=1`` swings eighths, ``0.5`` sixteenths. Onsets and ends are warped alike."""
    require_ticks(score, "swing")
    if not 0 <= amount <= 1:
        raise ValueError(f"swing amount={amount} must be in [0, 1]")
    if not unit_beats > 0:
        raise ValueError(f"unit_beats={unit_beats} must be > 0")
    out = score.copy()
    unit = unit_beats * out.ticks_per_quarter
    mid = 0.5 + amount / 6

    def warp(t: np.ndarray) -> np.ndarray:
        span, pos = np.divmod(t / unit, 1.0)
        pos = np.where(pos < 0.5, pos * (mid / 0.5), mid + (pos - 0.5) * ((1 - mid) / 0.5))
        return np.rint((span + pos) * unit)

    for track in out.tracks:
        n = note_arrays(track)
        on, end = (
            warp(n["time"].astype(np.float64)),
            warp((n["time"] + n["duration"]).astype(np.float64)),
        )
        n["time"], n["duration"] = on.astype(np.int64), np.maximum(end - on, 1).astype(np.int64)
        set_notes(track, n)
    return out


def humanize(
    score: symusic.Score,
    rng: np.random.Generator,
    timing_beats: float = 0.02,
    velocity_std: float = 4.0,
) -> symusic.Score:
    """Gaussian onset jitter (std ``timing_beats`` of a quarter; 0.02 = 10 ms at 120 BPM, the
    order of human timing deviation) and velocity jitter (std ``velocity_std``); durations kept."""
    require_ticks(score, "humanize")
    if timing_beats < 0 or velocity_std < 0:
        raise ValueError(
            f"timing_beats={timing_beats} and velocity_std={velocity_std} must be >= 0"
        )
    out = score.copy()
    std_ticks = timing_beats * out.ticks_per_quarter
    for track in out.tracks:
        n = note_arrays(track)
        k = len(n["time"])
        n["time"] = np.maximum(np.rint(n["time"] + rng.normal(0, std_ticks, k)), 0).astype(np.int64)
        n["velocity"] = np.clip(
            np.rint(n["velocity"] + rng.normal(0, velocity_std, k)), 1, 127
        ).astype(np.int64)
        set_notes(track, n)
    return out


def random_augment(
    score: symusic.Score,
    rng: np.random.Generator,
    *,
    transpose_range: int = 0,
    velocity_jitter: float = 0.0,
    time_stretch_range: float = 0.0,
    pitch_range: tuple[int, int] = (0, 128),
) -> symusic.Score:
    """The augmentations of ``DataConfig`` in one call (``transpose``, ``velocity_jitter``,
    ``time_stretch`` fields): a valid random transposition within ``±transpose_range`` keeping
    ``pitch_range``, a velocity scale in ``1 ± velocity_jitter`` and a tempo scale in
    ``1 ± time_stretch_range``. A zero setting skips that step (and draws nothing)."""
    out = score
    if transpose_range:
        out, _ = random_transpose(out, transpose_range, rng, *pitch_range)
    if velocity_jitter:
        out = scale_velocity(out, float(rng.uniform(1 - velocity_jitter, 1 + velocity_jitter)))
    if time_stretch_range:
        out, _ = random_time_stretch(out, time_stretch_range, rng)
    return out if out is not score else score.copy()
