"""Phrases and sections: bar-level self-similarity of melody and harmony, segmented by a DP.

1. Each bar (from the downbeats) becomes a melody vector (pitch per 8th-note slot, held notes
   continue, rests are -1) and a harmony vector (chord label per beat).
2. Bar-to-bar similarity: share of equal slots (transposition ignored: none in pop repeats).
3. Boundary evidence per bar line (:func:`bar_features`): melody rests before it, melody present
   or not on either side, the start of a repeated block (bar i matches bar i-L while bar i-1 does
   not match bar i-1-L; also for L a multiple of 4), Foote novelty of the similarity matrix over
   2, 4 and 8 bars, the bar count from the first melody bar modulo 4 and 8, the first melody bar
   and the bar after the last, a chord change at the bar line, a note held at the end of the bar
   before; then where repeated blocks of any lag start and stop (:func:`repeat_runs`), the bar's
   similarity to the bars 1, 2, 4, 8 and 16 before it, its best match earlier and later, and the
   log of the bar length in seconds (the pace).
4. Bidirectional GRUs read these features over all the bars of the piece
   (:mod:`aurl.analysis.structure_network`, ``data/structure_model.{json,safetensors}``, fitted
   on POP909 001-600 and the Bach chorales of the training split with their fermatas by
   ``benchmarks/fit_structure_model.py``); their averaged output is a boundary logit per bar line.
   They replaced a network over the features of bars i-2..i+2 only: boundary F3 on POP909
   601-700 0.631 -> 0.727; Bach chorale phrase ends (fermatas, validation and test splits) F 0.10
   -> 0.55 (BENCHMARKS.md).
5. A dynamic programme picks the phrase starts maximising the boundary logits (plus ``offset``)
   plus ``length_weight`` x the log frequency of each phrase length in bars in the annotations of
   POP909 001-600 (4 and 8 bars dominate; Dai, Zhang & Dannenberg 2020).
6. Labels: segments whose mean similarity is above ``same_threshold`` share a letter (A, B, ...;
   copies compared at offsets of up to one bar, :func:`label_segments`);
   melody-free segments get lowercase letters (intro/bridge/outro style, as the annotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the networks need torch, imported when a piece is segmented
    from aurl.analysis.structure_network import StructureModel

SLOTS_PER_BEAT = 2
N_BAR_FEATURES = 30  # columns of :func:`bar_features`
SIM_LAGS = (1, 2, 4, 8, 16)  # bar i's similarity to bar i - lag is a feature


@dataclass(frozen=True)
class StructureConfig:
    min_sim: float = 0.6  # bar similarity counted as a repetition
    same_threshold: float = 0.5  # segment similarity for sharing a label (0.5-0.55 best on 601-700)
    # DP balance; None = the values chosen on POP909 601-700 and stored in structure_model.json
    length_weight: float | None = None  # weight of the phrase-length log prior
    offset: float | None = None  # added to every boundary logit (more or fewer phrases)


@dataclass(frozen=True)
class Section:
    start: float
    end: float
    label: str


def bar_melody(
    mel_on: np.ndarray,
    mel_off: np.ndarray,
    mel_pitch: np.ndarray,
    beats: np.ndarray,
    bar_idx: np.ndarray,
) -> np.ndarray:
    """(bars, slots) melody pitch per slot (-1 = rest); ``bar_idx`` are beat indices of downbeats."""
    period = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    grid = np.concatenate([beats, beats[-1] + period * np.arange(1, 9)])
    sub = (
        grid[:-1, None] + np.diff(grid)[:, None] * np.arange(SLOTS_PER_BEAT) / SLOTS_PER_BEAT
    ).ravel()
    j = np.searchsorted(mel_on, sub + 0.02, side="right") - 1
    ok = (j >= 0) & (sub < mel_off[np.maximum(j, 0)])
    slot_pitch = np.where(ok, mel_pitch[np.maximum(j, 0)], -1)
    bpb = int(np.median(np.diff(bar_idx))) if len(bar_idx) > 1 else 4
    at = np.asarray(bar_idx, dtype=np.int64)[:, None] * SLOTS_PER_BEAT + np.arange(
        bpb * SLOTS_PER_BEAT
    )
    inside = at < len(slot_pitch)  # slots past the end of the grid are rests
    return np.where(inside, slot_pitch[np.minimum(at, len(slot_pitch) - 1)], -1).astype(np.int64)


def bar_harmony(chords: list, beats: np.ndarray, bar_idx: np.ndarray, bpb: int) -> np.ndarray:
    """(bars, bpb) chord id sounding at each beat of each bar (ids in label order)."""
    ch_start = np.array([c.start for c in chords]) if chords else np.zeros(1)
    ch_id = {lab: k for k, lab in enumerate(sorted({c.label for c in chords}))}
    ch_lab = np.array([ch_id[c.label] for c in chords]) if chords else np.zeros(1, dtype=int)
    period = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    beat_t = np.concatenate([beats, beats[-1] + period * np.arange(1, bpb + 1)])
    at = np.asarray(bar_idx, dtype=np.int64)[:, None] + np.arange(bpb)
    t = beat_t[np.minimum(at, len(beat_t) - 1)] + 1e-3  # past the end: the last beat again
    k = np.clip(np.searchsorted(ch_start, t, side="right") - 1, 0, len(ch_lab) - 1)
    return ch_lab[k].astype(np.int64).reshape(len(bar_idx), bpb)


def similarity(mel: np.ndarray, harm: np.ndarray) -> np.ndarray:
    """(bars, bars) share of equal melody slots (both sounding) blended with equal chords."""
    sounding = mel >= 0
    eq = (mel[:, None, :] == mel[None, :, :]) & sounding[:, None, :]
    either = (sounding[:, None, :] | sounding[None, :, :]).sum(axis=2)
    m = eq.sum(axis=2) / np.maximum(either, 1)
    h = (harm[:, None, :] == harm[None, :, :]).mean(axis=2)
    both_silent = either == 0
    return np.where(both_silent, 0.5 * h, 0.7 * m + 0.3 * h)


def _foote(sim: np.ndarray, width: int) -> np.ndarray:
    """(bars,) checkerboard novelty: mean similarity inside the blocks before/after minus across.

    Block sums come from a summed-area table, all bar lines at once (a loop over bar lines with
    slice means cost ~0.8 ms per width for a 90-bar song).
    """
    n = len(sim)
    out = np.zeros(n)
    if n < 2:
        return out
    area = np.zeros((n + 1, n + 1))
    area[1:, 1:] = sim.cumsum(axis=0).cumsum(axis=1)

    def block(r0, r1, c0, c1):
        return area[r1, c1] - area[r0, c1] - area[r1, c0] + area[r0, c0]

    i = np.arange(1, n)
    a, b = np.maximum(0, i - width), np.minimum(n, i + width)
    before, after = (i - a).astype(float), (b - i).astype(float)
    within = 0.5 * (block(a, i, a, i) / before**2 + block(i, b, i, b) / after**2)
    out[1:] = within - block(a, i, i, b) / (before * after)
    return out


def diagonal_runs(sim: np.ndarray, min_sim: float) -> tuple[np.ndarray, ...]:
    """Cells of repeated blocks: runs of >= 2 bars along a diagonal of ``sim`` at ``min_sim`` or
    above (bar i repeats bar j for consecutive i, j; i > j).

    Returns ``(i, j, length, first, last)`` per cell: the run's length and whether the cell opens
    or closes it.
    """
    n = len(sim)
    hit = np.tril(sim >= min_sim, -1)
    # Lengths of the diagonal runs, counted forward to and backward from each cell.
    fwd, bwd = np.zeros((n + 1, n + 1)), np.zeros((n + 2, n + 2))
    for i in range(n):
        fwd[i + 1, 1:] = np.where(hit[i], fwd[i, :-1] + 1, 0)
    for i in range(n - 1, -1, -1):
        bwd[i, :n] = np.where(hit[i], bwd[i + 1, 1 : n + 1] + 1, 0)
    total = fwd[1:, 1:] + bwd[:n, :n] - 1  # length of the run through each cell
    ii, jj = np.nonzero(hit & (total >= 2))
    return ii, jj, total[ii, jj], fwd[ii + 1, jj + 1] == 1, bwd[ii, jj] == 1


def repeat_runs(sim: np.ndarray, min_sim: float) -> np.ndarray:
    """(bars, 3) where repeated blocks (:func:`diagonal_runs`) start, end and lie.

    Both copies count. Columns: a block starts at this bar; a block ended at the bar before (so
    this bar line is where the repetition stops); the bar lies inside a block. The weight is
    min(block length, 16) / 16, the largest over blocks.
    """
    return run_columns(diagonal_runs(sim, min_sim), len(sim))


def run_columns(runs: tuple[np.ndarray, ...], n: int) -> np.ndarray:
    """:func:`repeat_runs` from the cells :func:`diagonal_runs` found in ``n`` bars."""
    out = np.zeros((n + 1, 3))
    ii, jj, length, first, last = runs
    w = np.minimum(length, 16) / 16
    for rows, col, sel in ((ii, 0, first), (jj, 0, first), (ii + 1, 1, last), (jj + 1, 1, last)):
        np.maximum.at(out[:, col], rows[sel], w[sel])
    np.maximum.at(out[:, 2], ii, w)
    np.maximum.at(out[:, 2], jj, w)
    return out[:n]


def bar_features(
    mel: np.ndarray, harm: np.ndarray, sim: np.ndarray, min_sim: float, bar_seconds: float
) -> np.ndarray:
    """(bars, 30) evidence that a phrase starts at each bar line (see the module docstring).

    ``bar_seconds``: the median bar length; its log is the last column (the same in every bar).
    Chorale phrases last 1-2 bars of ~2 s, pop phrases 4-8 bars of ~2-3 s: fitted on both, the
    network needs the pace to tell them apart.
    """
    n, slots = mel.shape
    has = (mel >= 0).any(axis=1)
    first = int(np.argmax(has)) if has.any() else 0
    last = n - 1 - int(np.argmax(has[::-1])) if has.any() else n - 1
    sounding = (mel >= 0).ravel()
    # Silent slots right before each bar line (up to 4 bars), by a running count.
    silent_run = np.zeros(len(sounding) + 1)
    for k, on in enumerate(sounding):
        silent_run[k + 1] = 0.0 if on else silent_run[k] + 1
    rest_before = np.minimum(silent_run[np.arange(n) * slots], 4 * slots) / (4 * slots)
    rep, rep4 = np.zeros(n), np.zeros(n)
    runs = diagonal_runs(sim, min_sim)
    ii, jj, _, opens, _ = runs
    lag = ii - jj
    for r, sel in ((rep, opens & (lag >= 2)), (rep4, opens & (lag >= 2) & (lag % 4 == 0))):
        r[ii[sel]] = 1.0  # both copies of a repeated block start here
        r[jj[sel]] = 1.0
    k = np.arange(n) - first
    prev_has = np.r_[False, has[:-1]]
    last_beat_silent = np.r_[False, (mel[:-1, -SLOTS_PER_BEAT:] < 0).all(axis=1)]
    chord_change = np.r_[False, harm[1:, 0] != harm[:-1, -1]]
    held = np.r_[False, (mel[:-1, -1] >= 0) & (mel[:-1, -1] == mel[:-1, -2 * SLOTS_PER_BEAT])]
    cols = [
        last_beat_silent & has,
        rest_before,
        has,
        prev_has,
        has != prev_has,
        rep,
        rep4,
        _foote(sim, 2),
        _foote(sim, 4),
        _foote(sim, 8),
        k % 4 == 0,
        k % 8 == 0,
        np.arange(n) == first,
        np.arange(n) == last + 1,
        chord_change,
        held,
    ]
    # Repetition seen from each bar: where repeated blocks start and stop (two strictnesses),
    # how like the bars 1, 2, 4, 8, 16 before it the bar is, and its best match anywhere earlier
    # and later (new material or not).
    idx = np.arange(n)
    lagged = [np.where(idx >= lag, sim[idx, np.maximum(idx - lag, 0)], 0.0) for lag in SIM_LAGS]
    cols += [*run_columns(runs, n).T, *repeat_runs(sim, 0.8).T, *lagged]
    cols += [np.tril(sim, -1).max(axis=1), np.triu(sim, 1).max(axis=1)]
    cols.append(np.full(n, np.log(max(bar_seconds, 0.1))))
    return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)


def segment_bars(logits: np.ndarray, length_logp: np.ndarray, length_weight: float) -> list[int]:
    """Bar indices where phrases start (always 0): DP over phrase lengths 1..len(length_logp)."""
    n = len(logits)
    max_len = len(length_logp)
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):
        for length in range(1, min(max_len, end) + 1):
            start = end - length
            s = (
                best[start]
                + length_weight * length_logp[length - 1]
                + (logits[start] if start > 0 else 0.0)
            )
            if s > best[end]:
                best[end], back[end] = s, start
    starts, k = [], n
    while k > 0:
        k = int(back[k])
        starts.append(k)
    return starts[::-1]


def label_segments(
    sim: np.ndarray, starts: list[int], n: int, mel: np.ndarray, cfg: StructureConfig
) -> list[str]:
    """A letter per segment: similar segments share one; melody-free ones are lowercase.

    A segment takes the letter of the earlier segment it matches best (mean similarity of
    corresponding bars at or above ``same_threshold``; lengths within half of each other). The
    copies are compared at offsets of -1, 0 and +1 bar, so a repeat whose inferred boundary is a
    bar off still matches. On POP909 601-700 (pairwise F against annotator 1): first segment of
    each letter only, no offsets 0.664; every earlier segment 0.666; with offsets 0.689
    (offsets of up to 2 bars 0.688).
    """
    ends = [*starts[1:], n]
    labels: list[str] = []
    earlier: list[tuple[int, int, int]] = []  # (start, end, letter index) of each segment
    letters = 0
    for a, b in zip(starts, ends, strict=True):
        melodic = (mel[a:b] >= 0).mean() > 0.15
        best, chosen = cfg.same_threshold, None
        for ra, rb, letter_idx in earlier:
            if abs((b - a) - (rb - ra)) > (b - a) // 2:
                continue
            m = min(b - a, rb - ra)
            for shift in (-1, 0, 1):
                k0, k1 = max(0, -(ra + shift)), min(m, n - ra - shift)  # bars inside the piece
                if k1 <= k0:
                    continue
                c = ra + shift
                s = float(np.trace(sim[a + k0 : a + k1, c + k0 : c + k1])) / (k1 - k0)
                if s >= best:
                    best, chosen = s, letter_idx
        if chosen is None:
            chosen, letters = letters, letters + 1
        earlier.append((a, b, chosen))
        letter = chr(ord("A") + chosen % 26) + ("" if chosen < 26 else str(chosen // 26))
        labels.append(letter if melodic else letter.lower())
    return labels


def bar_evidence(
    melody: list, chords: list, beats: np.ndarray, downbeats: np.ndarray, min_sim: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bar: the melody slots, the bar-to-bar similarity and :func:`bar_features`."""
    bar_idx = np.searchsorted(beats, downbeats - 1e-6)
    if len(melody) == 0:
        mel = np.full((len(bar_idx), 8), -1)
    else:
        mel = bar_melody(
            np.array([m.start for m in melody]),
            np.array([m.end for m in melody]),
            np.array([m.pitch for m in melody]),
            beats,
            bar_idx,
        )
    harm = bar_harmony(chords, beats, bar_idx, mel.shape[1] // SLOTS_PER_BEAT)
    sim = similarity(mel, harm)
    bar_seconds = float(np.median(np.diff(downbeats)))
    return mel, sim, bar_features(mel, harm, sim, min_sim, bar_seconds)


def find_sections(
    melody: list,
    chords: list,
    beats: np.ndarray,
    downbeats: np.ndarray,
    end: float,
    cfg: StructureConfig | None = None,
    model: StructureModel | None = None,
) -> list[Section]:
    """Sections ``[start, end)`` with repetition letters, from melody notes and chord segments."""
    cfg = cfg or StructureConfig()
    if len(beats) < 4 or len(downbeats) < 2:
        return [Section(0.0, end, "A")] if end > 0 else []
    mel, sim, feats = bar_evidence(melody, chords, beats, downbeats, cfg.min_sim)
    if model is None:
        from aurl.analysis.structure_network import default_model

        model = default_model()
    weight = model.length_weight if cfg.length_weight is None else cfg.length_weight
    offset = model.offset if cfg.offset is None else cfg.offset
    starts = segment_bars(model.logits(feats) + offset, model.length_logp, weight)
    labels = label_segments(sim, starts, len(mel), mel, cfg)
    times = [float(downbeats[s]) for s in starts]
    times[0] = 0.0
    out = []
    for k, (t, lab) in enumerate(zip(times, labels, strict=True)):
        e = times[k + 1] if k + 1 < len(times) else max(end, t + 1e-3)
        out.append(Section(t, e, lab))
    return out
