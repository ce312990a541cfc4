"""Analysis-based per-piece features (issue 11 item 8), registered into the features registry.

``aurl evaluate --samples`` imports this module when it exists, so these features are compared
between generated pieces and the reference corpus like every other one. Each runs the analyzers of
:mod:`aurl.analysis` on the piece's notes, with beats and bars from the piece's own grid (a
generated piece's meter is known, unlike a user's file):

- ``key_stability``: share of the piece's time spent in its main key (the key HMM of
  :mod:`aurl.analysis.key`); 1.0 = one key throughout.
- ``chord_vocabulary``: how many distinct chords (root + quality, inversions ignored) it uses.
- ``chord_fifth_motion``: share of chord changes whose root moves by a fourth or fifth (the motion
  of most cadences and circle-of-fifths progressions).
- ``repeated_bars``: share of (non-silent) bars whose notes repeat an earlier bar's: Jaccard
  similarity of the bars' (16th position, pitch) sets over all voices at least
  ``StructureConfig.min_sim``. All voices rather than the extracted melody: the melody scorer is
  trained on pop songs, and a chorale or a generated piece has no single tune to extract.
"""

from __future__ import annotations

import itertools

import numpy as np

from aurl.analysis.chords import recognize_chords
from aurl.analysis.key import estimate_keys, global_key
from aurl.analysis.notes import NoteArray
from aurl.analysis.structure import StructureConfig
from aurl.evaluation.features import Piece, feature

_LAST: list = []  # (piece id, results) of the last piece analysed: the four features share one run


def _notes(piece: Piece) -> NoteArray:
    keep = piece.pitched
    on = piece.onset_s[keep]
    order = np.lexsort((piece.pitch[keep], on))
    onset = on[order]
    offset = onset + np.maximum(piece.duration_s[keep][order], 0.02)
    pitch = piece.pitch[keep][order]
    return NoteArray(onset, offset, pitch, np.full(len(pitch), 80, dtype=np.int64))


def _to_seconds(piece: Piece, beats: np.ndarray) -> np.ndarray:
    """Beat positions -> seconds through the piece's own onsets (its tempo map)."""
    if len(piece.onset) < 2:
        return beats * 0.5
    t, s = np.unique(piece.onset, return_index=True)
    if len(t) < 2:
        return beats * 0.5
    return np.interp(beats, t, piece.onset_s[s], left=np.nan, right=np.nan)


def _analyse(piece: Piece) -> dict:
    if _LAST and _LAST[0][0] is piece:
        return _LAST[0][1]
    notes = _notes(piece)
    out: dict = {}
    if len(notes) >= 4:
        grid = np.arange(0.0, np.ceil(piece.end) + 1.0)
        beats = _to_seconds(piece, grid)
        ok = ~np.isnan(beats)
        beats, grid = beats[ok], grid[ok]
        bars = (
            piece.bars[(piece.bars >= grid.min()) & (piece.bars <= grid.max())] if len(grid) else []
        )
        downbeats = _to_seconds(piece, np.asarray(bars, dtype=np.float64))
        if len(beats) >= 4 and len(downbeats) >= 2:
            keys = estimate_keys(notes=notes, beats=beats, downbeats=downbeats)
            chords = recognize_chords(notes=notes, beats=beats, downbeats=downbeats)
            out = {
                "keys": keys,
                "chords": chords,
                "beats": beats,
                "downbeats": downbeats,
                "notes": notes,
            }
    _LAST[:] = [(piece, out)]
    return out


@feature(
    "key_stability",
    unit="fraction",
    description="Share of the piece's time in its main key (1 = never changes key).",
    title="key stability",
)
def key_stability(piece: Piece) -> float:
    a = _analyse(piece)
    if not a or not a["keys"]:
        return float("nan")
    main = global_key(a["keys"])
    total = sum(k.end - k.start for k in a["keys"])
    return sum(k.end - k.start for k in a["keys"] if k.label == main) / max(total, 1e-9)


def _chord_labels(a: dict) -> list[str]:
    return [c.label.split("/")[0] for c in a["chords"] if c.label != "N"]


@feature(
    "chord_vocabulary",
    unit="chords",
    description="How many different chords (root and quality) the piece uses.",
    title="chord vocabulary",
)
def chord_vocabulary(piece: Piece) -> float:
    a = _analyse(piece)
    return float(len(set(_chord_labels(a)))) if a else float("nan")


@feature(
    "chord_fifth_motion",
    unit="fraction",
    description="Share of chord changes whose root moves by a fourth or a fifth.",
    title="chord roots moving by 4ths/5ths",
)
def chord_fifth_motion(piece: Piece) -> float:
    from aurl.analysis.spelling import pitch_class

    a = _analyse(piece)
    if not a:
        return float("nan")
    roots = [pitch_class(lab.split(":")[0]) for lab in _chord_labels(a)]
    moves = [(b - r) % 12 for r, b in itertools.pairwise(roots) if b != r]
    return float(np.mean([m in (5, 7) for m in moves])) if moves else float("nan")


@feature(
    "repeated_bars",
    unit="fraction",
    description="Share of bars whose notes (position and pitch, all voices) repeat an earlier bar.",
    title="repeated bars",
)
def repeated_bars(piece: Piece) -> float:
    a = _analyse(piece)
    if not a or len(a["downbeats"]) < 3:
        return float("nan")
    beats, downbeats = a["beats"], a["downbeats"]
    notes = a["notes"]
    # Every note as (bar, 16th position in the bar, pitch), all voices: the feature must not hang
    # on which notes the (pop-trained) melody scorer calls the tune.
    beat_pos = np.interp(notes.onset, beats, np.arange(len(beats), dtype=np.float64))
    bar_beat = np.interp(downbeats, beats, np.arange(len(beats), dtype=np.float64))
    bar = np.searchsorted(bar_beat, beat_pos + 1e-6, side="right") - 1
    ok = bar >= 0
    slot = np.round((beat_pos - bar_beat[np.maximum(bar, 0)]) * 4).astype(np.int64)
    content: list[set] = [set() for _ in range(len(downbeats))]
    for b, q, p in zip(bar[ok], slot[ok], notes.pitch[ok], strict=True):
        content[b].add((int(q), int(p)))
    threshold = StructureConfig().min_sim
    repeats = []
    for i in range(1, len(content)):
        if not content[i]:
            continue  # a silent bar repeats nothing
        repeats.append(
            any(
                len(content[i] & content[j]) / len(content[i] | content[j]) >= threshold
                for j in range(i)
                if content[j]
            )
        )
    return float(np.mean(repeats)) if repeats else float("nan")
