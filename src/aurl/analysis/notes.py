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


def overlap_pairs(
    notes: NoteArray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment, note, seconds) for every note sounding inside segment ``[bounds[s], bounds[s+1])``.

    Sparse: a note touches only the few segments it spans, so this is O(notes), not O(S x N).
    """
    n_seg = len(bounds) - 1
    first = np.clip(np.searchsorted(bounds, notes.onset, side="right") - 1, 0, n_seg)
    last = np.clip(np.searchsorted(bounds, notes.offset, side="left") - 1, -1, n_seg - 1)
    count = np.maximum(last - first + 1, 0)
    note = np.repeat(np.arange(len(notes)), count)
    seg = np.repeat(first, count) + (
        np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    )
    ov = np.minimum(bounds[seg + 1], notes.offset[note]) - np.maximum(
        bounds[seg], notes.onset[note]
    )
    keep = ov > 0
    return seg[keep], note[keep], ov[keep]


def overlap_matrix(notes: NoteArray, bounds: np.ndarray) -> np.ndarray:
    """(S, N) seconds each note sounds inside each segment (dense; for small inputs and tests)."""
    seg, note, ov = overlap_pairs(notes, bounds)
    out = np.zeros((len(bounds) - 1, len(notes)))
    out[seg, note] = ov
    return out


def segment_chroma(
    notes: NoteArray, bounds: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """(S, 12) duration-weighted pitch-class profile of each segment (not normalised)."""
    seg, note, ov = overlap_pairs(notes, bounds)
    if weights is not None:
        ov = ov * weights[note]
    out = np.zeros((len(bounds) - 1) * 12)
    np.add.at(out, seg * 12 + notes.pitch[note] % 12, ov)
    return out.reshape(-1, 12)


def bass_chroma(notes: NoteArray, bounds: np.ndarray) -> np.ndarray:
    """(S, 12) profile of the lowest sounding notes: each note weighted by how low it is in its segment.

    Weight is ``exp(-(pitch - lowest) / 4)`` per segment, so the lowest note dominates and notes a
    few semitones above it still count (a bass line and its octave doubling).
    """
    seg, note, ov = overlap_pairs(notes, bounds)
    lowest = np.full(len(bounds) - 1, 999)
    p = notes.pitch[note]
    np.minimum.at(lowest, seg, p)
    w = np.exp(-(p - lowest[seg]) / 4.0) * ov
    out = np.zeros((len(bounds) - 1) * 12)
    np.add.at(out, seg * 12 + p % 12, w)
    return out.reshape(-1, 12)
