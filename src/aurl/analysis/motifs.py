"""Recurring melodic patterns: transposition-invariant interval/rhythm n-grams and their occurrences.

A melody of n notes becomes n-1 symbols ``(interval in semitones, duration ratio class)`` where the
ratio class is the log2 of the inter-onset-interval ratio rounded to halves, so a motif played
higher or slower still matches. Every n-gram of ``min_notes``..``max_notes`` notes is hashed; those
that occur ``min_occurrences`` times without overlapping are kept, longer ones first, and a shorter
pattern is dropped when a kept longer one covers all its occurrences.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MotifConfig:
    min_notes: int = 4  # a motif spans at least this many notes (3 intervals)
    max_notes: int = 12
    min_occurrences: int = 2
    max_motifs: int = 10

    def __post_init__(self) -> None:
        if not 2 <= self.min_notes <= self.max_notes:
            raise ValueError(
                f"MotifConfig: need 2 <= min_notes ({self.min_notes}) <= max_notes ({self.max_notes})"
            )


@dataclass(frozen=True)
class Occurrence:
    start: float
    end: float
    first_note: int  # index into the melody


@dataclass(frozen=True)
class Motif:
    pattern: list[int]  # intervals in semitones between consecutive notes
    occurrences: list[Occurrence]


def symbols(onset: np.ndarray, pitch: np.ndarray) -> list[tuple[int, int]]:
    """(interval, rhythm class) between consecutive notes; rhythm = round(2 log2(IOI ratio))."""
    if len(onset) < 2:
        return []
    ioi = np.diff(onset)
    ioi = np.r_[ioi, ioi[-1]]
    ratio = np.round(2 * np.log2(np.maximum(ioi[1:], 1e-3) / np.maximum(ioi[:-1], 1e-3))).astype(
        int
    )
    return list(zip(np.diff(pitch).astype(int).tolist(), ratio.tolist(), strict=True))


def find_motifs(
    onset: np.ndarray, offset: np.ndarray, pitch: np.ndarray, cfg: MotifConfig | None = None
) -> list[Motif]:
    """Motifs of a monophonic line given by note onsets, offsets (s) and pitches."""
    cfg = cfg or MotifConfig()
    sym = symbols(np.asarray(onset, float), np.asarray(pitch, int))
    kept: list[tuple[int, list[int]]] = []  # (n intervals, start indices)
    cover_end = np.full(len(sym) + 1, -1)  # cover_end[a]: furthest end of a kept span starting at a
    for n_int in range(cfg.max_notes - 1, cfg.min_notes - 2, -1):
        reach = np.maximum.accumulate(
            cover_end
        )  # furthest end of kept spans starting at or before i
        table: dict[tuple, list[int]] = defaultdict(list)
        for i in range(len(sym) - n_int + 1):
            table[tuple(sym[i : i + n_int])].append(i)
        for starts in table.values():
            chosen: list[int] = []
            for s in starts:  # greedy non-overlapping occurrences
                if not chosen or s >= chosen[-1] + n_int + 1:
                    chosen.append(s)
            if len(chosen) < cfg.min_occurrences:
                continue
            if all(reach[s] >= s + n_int for s in chosen):
                continue  # every occurrence sits inside a longer kept motif
            kept.append((n_int, chosen))
            for s in chosen:
                cover_end[s] = max(cover_end[s], s + n_int)
    kept.sort(key=lambda km: -(km[0] + 1) * len(km[1]))
    out = []
    for n_int, starts in kept[: cfg.max_motifs]:
        pattern = [sym[starts[0] + k][0] for k in range(n_int)]
        occ = [Occurrence(float(onset[s]), float(offset[s + n_int]), s) for s in starts]
        out.append(Motif(pattern, occ))
    return out
