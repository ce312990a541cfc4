"""Notes of a score as flat arrays in seconds, and beat-synchronous pitch-class profiles.

Every analyzer starts here: all non-drum tracks are merged (the analysis must work on a user's
one-track piano file, so track names and layout are never used), times are seconds on the
file's own timeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import symusic


@dataclass(frozen=True)
class NoteArray:
    """Notes sorted by (onset, pitch); all arrays have one row per note."""

    onset: np.ndarray  # (N,) seconds
    offset: np.ndarray  # (N,) seconds, > onset
    pitch: np.ndarray  # (N,) MIDI pitch
    velocity: np.ndarray  # (N,) 1..127

    def __len__(self) -> int:
        return len(self.onset)

    @property
    def end(self) -> float:
        return float(self.offset.max()) if len(self) else 0.0

    def take(self, idx: np.ndarray) -> NoteArray:
        return NoteArray(self.onset[idx], self.offset[idx], self.pitch[idx], self.velocity[idx])


def is_tick(score: symusic.Score) -> bool:
    """True for a score whose times are MIDI ticks (``symusic.Score`` loaded from a file)."""
    return str(score.ttype).endswith("Tick")


# Notes shorter than this are stretched so that a zero-length note still counts in the chroma.
MIN_DURATION_S = 0.02


def score_notes(score: symusic.Score) -> NoteArray:
    """All pitched notes of ``score`` (drum tracks skipped) merged into one sorted array."""
    sec = score.to("second") if is_tick(score) or "Quarter" in str(score.ttype) else score
    parts = [t.notes.numpy() for t in sec.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        empty = np.zeros(0)
        return NoteArray(empty, empty, empty.astype(np.int64), empty.astype(np.int64))
    onset = np.concatenate([p["time"] for p in parts]).astype(np.float64)
    dur = np.concatenate([p["duration"] for p in parts]).astype(np.float64)
    pitch = np.concatenate([p["pitch"] for p in parts]).astype(np.int64)
    vel = np.concatenate([p["velocity"] for p in parts]).astype(np.int64)
    order = np.lexsort((pitch, onset))
    onset, dur, pitch, vel = onset[order], dur[order], pitch[order], vel[order]
    return NoteArray(onset, onset + np.maximum(dur, MIN_DURATION_S), pitch, np.maximum(vel, 1))


def overlap_matrix(notes: NoteArray, bounds: np.ndarray) -> np.ndarray:
    """(S, N) seconds each note sounds inside each segment ``[bounds[s], bounds[s+1])``."""
    lo = np.maximum(bounds[:-1, None], notes.onset[None, :])
    hi = np.minimum(bounds[1:, None], notes.offset[None, :])
    return np.clip(hi - lo, 0.0, None)


def segment_chroma(
    notes: NoteArray, bounds: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """(S, 12) duration-weighted pitch-class profile of each segment (not normalised)."""
    ov = overlap_matrix(notes, bounds)  # (S, N)
    if weights is not None:
        ov = ov * weights[None, :]
    onehot = np.zeros((len(notes), 12))
    onehot[np.arange(len(notes)), notes.pitch % 12] = 1.0
    return ov @ onehot


def bass_chroma(notes: NoteArray, bounds: np.ndarray) -> np.ndarray:
    """(S, 12) profile of the lowest sounding notes: each note weighted by how low it is in its segment.

    Weight is ``exp(-(pitch - lowest) / 4)`` per segment, so the lowest note dominates and notes a
    few semitones above it still count (a bass line and its octave doubling).
    """
    ov = overlap_matrix(notes, bounds)  # (S, N)
    sounding = ov > 0
    p = np.where(sounding, notes.pitch[None, :], 999)
    lowest = p.min(axis=1, keepdims=True)
    w = np.where(sounding, np.exp(-(p - lowest) / 4.0), 0.0) * ov
    onehot = np.zeros((len(notes), 12))
    onehot[np.arange(len(notes)), notes.pitch % 12] = 1.0
    return w @ onehot
