"""The melody line of a polyphonic piece, found from the music (never from track names).

Each note gets 14 features of salience and context (register against what sounds around it, rank
in its onset group, loudness against its neighbours, duration, leaps to the neighbouring top notes);
a small two-layer network gives P(melody) per note. Further stages (stacking) re-score every note
from those features plus :func:`context_features` of the previous stages' probabilities: where the
provisional line (best note of each group above 0.5) runs, the leap and gap to its notes before and
after, how dense it is over 2/6/12 s, the note's loudness, register and length against it (never
the position in the piece: a prior that intros are accompaniment would drop the first bars of a
tune that starts at once). All stages live in
``data/melody_model.json``, fitted on POP909 (stages on 001-600, threshold on 601-700) with
``benchmarks/fit_melody_model.py``. Last, a bidirectional GRU reads the notes in time order (in
windows of 512) and re-scores each (:mod:`aurl.analysis.melody_sequence`, with the stacked answer
as one of its inputs). The line keeps, in each onset group, the most probable note
when its final probability passes the threshold, so it is monophonic.
The skyline (highest note of each onset group) is :func:`skyline`, the baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import symusic

from aurl.analysis.notes import NoteArray, overlap_pairs, score_notes

GROUP_S = 0.03  # onsets closer than this form one group (a chord struck together)
LOCAL_S = 2.0  # half-width of the context window for register and loudness
N_FEATURES = 14
N_CONTEXT = 17  # columns of :func:`context_features`, added per earlier stage


@dataclass(frozen=True)
class Stage:
    """One two-layer scorer: logit = w2 . relu(w1 (x - mean) / std + b1) + b2."""

    w1: np.ndarray  # (H, F)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (H,)
    b2: float
    mean: np.ndarray  # (F,) feature standardisation
    std: np.ndarray  # (F,)

    @classmethod
    def from_dict(cls, d: dict) -> Stage:
        a = {k: np.asarray(d[k], dtype=np.float64) for k in ("w1", "b1", "w2", "mean", "std")}
        return cls(b2=float(d["b2"]), **a)

    def logit(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(((x - self.mean) / self.std) @ self.w1.T + self.b1, 0.0)
        return h @ self.w2 + self.b2


@dataclass(frozen=True)
class MelodyModel:
    """Stage 1 scores :func:`note_features`; stage k > 1 scores them plus the context of stages < k."""

    stages: tuple[Stage, ...]
    threshold: float  # minimum final P(melody) for a note to join the line

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("MelodyModel needs at least one stage")
        for k, st in enumerate(self.stages):
            want = N_FEATURES + k * N_CONTEXT
            if st.w1.shape[1] != want:
                raise ValueError(
                    f"MelodyModel stage {k + 1} takes {st.w1.shape[1]} features, not {want}"
                )

    @classmethod
    def from_dict(cls, d: dict) -> MelodyModel:
        stages = d.get("stages", [d])  # a one-stage file keeps its flat layout
        return cls(tuple(Stage.from_dict(s) for s in stages), float(d["threshold"]))


@lru_cache(maxsize=1)
def default_model() -> MelodyModel:
    text = resources.files("aurl.analysis").joinpath("data/melody_model.json").read_text()
    return MelodyModel.from_dict(json.loads(text))


def onset_groups(notes: NoteArray) -> np.ndarray:
    """(N,) group index: notes whose onsets chain within :data:`GROUP_S` share a group."""
    if len(notes) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.r_[0, np.cumsum(np.diff(notes.onset) > GROUP_S)]


def _window_mean(t: np.ndarray, x: np.ndarray, at: np.ndarray, half: float) -> np.ndarray:
    """Mean of x over the points t within +-half of each ``at`` (t sorted)."""
    c = np.r_[0.0, np.cumsum(x)]
    lo = np.searchsorted(t, at - half)
    hi = np.searchsorted(t, at + half, side="right")
    return (c[hi] - c[lo]) / np.maximum(hi - lo, 1)


def note_features(notes: NoteArray) -> np.ndarray:
    """(N, 14) per-note features (see the module docstring)."""
    n = len(notes)
    g = onset_groups(notes)
    n_groups = int(g[-1]) + 1
    p = notes.pitch.astype(np.float64)
    v = notes.velocity.astype(np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    g_top = np.maximum.reduceat(p, starts)  # (G,)
    g_low = np.minimum.reduceat(p, starts)
    g_size = np.diff(np.r_[starts, n])
    g_vmax = np.maximum.reduceat(v, starts)
    # Rank from the top inside the group (notes are sorted by pitch within an onset).
    rank_top = g_top[g] - p
    order_in = np.arange(n) - starts[g]
    rank_idx = g_size[g] - 1 - order_in  # 0 = highest pitch of the group
    # Highest pitch still sounding (from earlier groups) at each group's onset.
    g_time = notes.onset[starts]
    held_max = np.full(n_groups, -1.0)
    seg, idx, _ = overlap_pairs(notes, np.r_[g_time, notes.end + 1.0])
    held = (notes.onset[idx] < g_time[seg] - GROUP_S) & (notes.offset[idx] > g_time[seg] + 0.05)
    np.maximum.at(held_max, seg[held], p[idx[held]])
    above_held = np.where(held_max[g] >= 0, p - held_max[g], 12.0)
    local_top = _window_mean(g_time, g_top, notes.onset, LOCAL_S)
    local_vel = _window_mean(notes.onset, v, notes.onset, LOCAL_S)
    local_pitch = _window_mean(notes.onset, p, notes.onset, LOCAL_S)
    prev_top = np.r_[g_top[0], g_top[:-1]][g]
    next_top = np.r_[g_top[1:], g_top[-1]][g]
    dur = notes.offset - notes.onset
    gap_next = np.r_[g_time[1:] - g_time[:-1], 1.0][g]
    f = np.stack(
        [
            (p - 60) / 12,
            np.log(dur + 1e-3),
            v / 127,
            (v - g_vmax[g]) / 20,
            (v - local_vel) / 20,
            rank_top / 12,
            np.minimum(rank_idx, 4),
            np.log(g_size[g]),
            (p - g_low[g]) / 12,
            np.clip(above_held, -24, 12) / 12,
            (p - local_top) / 12,
            (p - local_pitch) / 12,
            np.clip(np.abs(p - prev_top) + np.abs(p - next_top), 0, 36) / 12,
            np.log(gap_next + 1e-3),
        ],
        axis=1,
    )
    return f


def context_features(notes: NoteArray, prob: np.ndarray) -> np.ndarray:
    """(N, 17) where each note stands against the provisional line that ``prob`` implies.

    The line is the most probable note of each onset group whose probability passes 0.5.
    """
    n = len(notes)
    g = onset_groups(notes)
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    sizes = np.diff(np.r_[starts, n])
    gmax = np.maximum.reduceat(prob, starts)
    p = notes.pitch.astype(np.float64)
    v = notes.velocity.astype(np.float64)
    dur = notes.offset - notes.onset
    t = notes.onset
    pc = np.clip(prob, 1e-4, 1 - 1e-4)
    order = np.lexsort((-prob, g))  # by group, most probable first
    best_idx = order[starts]
    second = np.zeros(len(starts))
    second[sizes > 1] = prob[order[starts[sizes > 1] + 1]]
    is_best = prob >= gmax[g] - 1e-12
    rival = np.where(is_best, second[g], gmax[g])  # the best other note of the group
    line = best_idx[prob[best_idx] > 0.5]
    if len(line):
        lt, lp, lv, ld = t[line], p[line], v[line], np.log(dur[line] + 1e-3)
    else:  # no line: a far-away dummy note keeps the arithmetic finite
        lt, lp, lv, ld = np.array([-1e9]), np.array([60.0]), np.array([64.0]), np.array([0.0])
    j_prev = np.searchsorted(lt, t - GROUP_S) - 1  # line note of an earlier group
    j_next = np.searchsorted(lt, t + GROUP_S)  # line note of a later group
    jp, jn = np.clip(j_prev, 0, len(lt) - 1), np.clip(j_next, 0, len(lt) - 1)
    okp, okn = j_prev >= 0, j_next < len(lt)
    d_prev = np.where(okp, np.clip(p - lp[jp], -24, 24) / 12, 0.0)
    d_next = np.where(okn, np.clip(p - lp[jn], -24, 24) / 12, 0.0)
    gap_prev = np.log(np.where(okp, np.clip(t - lt[jp], 1e-3, 30.0), 30.0))
    gap_next = np.log(np.where(okn, np.clip(lt[jn] - t, 1e-3, 30.0), 30.0))
    g_time = t[starts]
    count = np.searchsorted(lt, t + 2.0) - np.searchsorted(lt, t - 2.0)
    near = (np.searchsorted(lt, t + 4.0) - np.searchsorted(lt, t - 4.0)) > 0
    f = np.stack(
        [
            _window_mean(g_time, gmax, t, 12.0),
            np.log(pc / (1 - pc)),
            prob - gmax[g],
            prob - rival,
            is_best.astype(np.float64),
            d_prev,
            d_next,
            np.abs(d_prev),
            np.abs(d_next),
            gap_prev,
            gap_next,
            _window_mean(g_time, gmax, t, 2.0),
            _window_mean(g_time, gmax, t, 6.0),
            np.log1p(count),
            np.where(near, (v - _window_mean(lt, lv, t, 4.0)) / 20, 0.0),
            np.where(near, (p - _window_mean(lt, lp, t, 4.0)) / 12, 0.0),
            np.where(near, np.log(dur + 1e-3) - _window_mean(lt, ld, t, 4.0), 0.0),
        ],
        axis=1,
    )
    return f


def stage_probabilities(
    notes: NoteArray, model: MelodyModel, features: np.ndarray | None = None
) -> list[np.ndarray]:
    """P(melody) per note after each stage (the last is the model's answer).

    ``features``: ``note_features(notes)`` when the caller already has them.
    """
    x = note_features(notes) if features is None else features
    out: list[np.ndarray] = []
    for k, st in enumerate(model.stages):
        if k:
            x = np.concatenate([x, context_features(notes, out[-1])], axis=1)
        out.append(1.0 / (1.0 + np.exp(-st.logit(x))))
    return out


def melody_probability(notes: NoteArray, model: MelodyModel | None = None) -> np.ndarray:
    """(N,) P(note belongs to the melody).

    With the shipped models (``model=None``) the stacked scorer's answer is re-scored by the
    sequence network (:mod:`aurl.analysis.melody_sequence`); a ``model`` given here is used alone.
    """
    if len(notes) == 0:
        return np.zeros(0)
    if model is not None:
        return stage_probabilities(notes, model)[-1]
    from aurl.analysis.melody_sequence import default_scorer

    x = note_features(notes)
    stacked = stage_probabilities(notes, default_model(), x)[-1]
    return default_scorer().probability(notes, x, onset_groups(notes), stacked)


def melody_threshold(model: MelodyModel | None = None) -> float:
    """The P(melody) a note needs to join the line (the sequence network's, for the shipped models)."""
    if model is not None:
        return model.threshold
    from aurl.analysis.melody_sequence import default_scorer

    return default_scorer().threshold


@dataclass(frozen=True)
class MelodyNote:
    start: float
    end: float
    pitch: int


@dataclass(frozen=True)
class MelodyConfig:
    """Decoding of the line from per-note probabilities (a Viterbi over onset groups)."""

    # Continuity costs default to 0: on POP909 601-620 any cost lowered note F1 (0.687 with none,
    # 0.675 with 0.5/0.5, 0.656 with 1/1), the per-note scorer already sees its neighbours.
    leap_cost: float = 0.0  # cost per octave of leap between consecutive melody notes
    velocity_cost: float = 0.0  # cost per 32 steps of velocity change between them
    candidates: int = 4  # most probable notes per group considered

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError(f"MelodyConfig.candidates={self.candidates}; must be >= 1")


def extract_melody(
    score: symusic.Score | None = None,
    *,
    notes: NoteArray | None = None,
    model: MelodyModel | None = None,
    cfg: MelodyConfig | None = None,
    prob: np.ndarray | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Indices (into ``notes``) of the melody: at most one note per onset group, monophonic.

    ``prob``: P(melody) per note when the caller already has it (else ``melody_probability``);
    ``threshold``: the P a note needs (else ``melody_threshold(model)``).

    Viterbi over onset groups: each group either rests or takes one of its ``candidates`` most
    probable notes, scoring logit(P(melody)) - logit(threshold) per note taken, minus the leap and
    velocity change from the previous group's note (voice-leading continuity; a rest breaks it).
    """
    if notes is None:
        if score is None:
            raise ValueError("extract_melody: pass a score or notes")
        notes = score_notes(score)
    if len(notes) == 0:
        return np.zeros(0, dtype=np.int64)
    cfg = cfg or MelodyConfig()
    if prob is None and model is None and not velocity_separates_voices(notes):
        # Simultaneous notes at one loudness (notation exports: music21, MuseScore, step entry).
        # The networks learned the tune from performances, where it is played out; on such files
        # they find next to nothing (Bach chorales from music21: the line was empty in 62 % of
        # them, the soprano's median P(melody) 0.001). The top voice is the convention there.
        # No POP909 song is affected (see velocity_separates_voices).
        return top_line(notes)
    if prob is None:
        prob = melody_probability(notes, model)
    prob = np.clip(prob, 1e-4, 1 - 1e-4)
    thr = melody_threshold(model) if threshold is None else threshold
    gain = np.log(prob / (1 - prob)) - np.log(thr / (1 - thr))
    g = onset_groups(notes)
    if cfg.leap_cost == 0 and cfg.velocity_cost == 0:  # no continuity: the best note of each group
        order = np.lexsort((prob, g))
        best = order[np.r_[np.flatnonzero(np.diff(g[order])), len(order) - 1]]
        return np.sort(best[gain[best] >= 0])
    order = np.lexsort((-prob, g))  # by group, most probable first
    starts = np.r_[0, np.flatnonzero(np.diff(g[order])) + 1, len(order)]
    K = cfg.candidates
    n_groups = len(starts) - 1
    cand = np.full((n_groups, K + 1), -1, dtype=np.int64)  # column K = rest
    for k in range(n_groups):
        take = order[starts[k] : min(starts[k + 1], starts[k] + K)]
        cand[k, : len(take)] = take
    valid = cand >= 0
    valid[:, K] = True
    em = np.where(cand[:, :K] >= 0, gain[np.maximum(cand[:, :K], 0)], -np.inf)
    em = np.c_[em, np.zeros(n_groups)]  # (G, K+1)
    pitch = notes.pitch[np.maximum(cand, 0)].astype(np.float64)
    vel = notes.velocity[np.maximum(cand, 0)].astype(np.float64)
    delta = em[0].copy()
    back = np.zeros((n_groups, K + 1), dtype=np.int64)
    for k in range(1, n_groups):
        cost = (
            cfg.leap_cost * np.abs(pitch[k - 1][:, None] - pitch[k][None, :]) / 12
            + cfg.velocity_cost * np.abs(vel[k - 1][:, None] - vel[k][None, :]) / 32
        )  # (from, to)
        cost[K, :] = 0.0  # after a rest, no continuity cost
        cost[:, K] = 0.0
        cand_score = delta[:, None] - cost
        back[k] = np.argmax(cand_score, axis=0)
        delta = cand_score[back[k], np.arange(K + 1)] + em[k]
    path = np.zeros(n_groups, dtype=np.int64)
    path[-1] = int(np.argmax(delta))
    for k in range(n_groups - 1, 0, -1):
        path[k - 1] = back[k, path[k]]
    chosen = cand[np.arange(n_groups), path]
    return np.sort(chosen[(path < K) & (chosen >= 0)])


def skyline(notes: NoteArray) -> np.ndarray:
    """Indices of the highest note of each onset group (the baseline melody)."""
    if len(notes) == 0:
        return np.zeros(0, dtype=np.int64)
    g = onset_groups(notes)
    order = np.lexsort((notes.pitch, g))
    return order[np.r_[np.flatnonzero(np.diff(g[order])), len(order) - 1]]


def velocity_separates_voices(notes: NoteArray, min_share: float = 0.1) -> bool:
    """Whether simultaneous notes differ in loudness: in at least ``min_share`` of the onsets that
    strike two or more notes, the velocities differ.

    That is the cue the melody networks learned from performances (the tune played out over its
    accompaniment). Notation exports (music21, MuseScore, step entry) strike every chord at one
    velocity even where they have dynamics. In POP909 (every 4th song), the share is at least
    0.64 (median 0.97); in the music21 chorales it is 0.
    """
    g = onset_groups(notes)
    if len(g) == 0:
        return False
    lo = np.full(g[-1] + 1, 255)
    hi = np.zeros(g[-1] + 1, dtype=np.int64)
    np.minimum.at(lo, g, notes.velocity)
    np.maximum.at(hi, g, notes.velocity)
    chords = np.bincount(g) > 1
    return bool(chords.any()) and float((hi > lo)[chords].mean()) >= min_share


def top_line(notes: NoteArray) -> np.ndarray:
    """Indices of the top voice: each onset group's highest note, unless a higher note of the line
    is still sounding (an inner voice moving under a held soprano note does not join the line)."""
    if len(notes) == 0:
        return np.zeros(0, dtype=np.int64)
    out: list[int] = []
    for i in skyline(notes):  # in onset order
        held_above = out and notes.offset[out[-1]] > notes.onset[i] + 0.01
        if held_above and notes.pitch[out[-1]] > notes.pitch[i]:
            continue
        out.append(int(i))
    return np.asarray(out, dtype=np.int64)


def melody_notes(notes: NoteArray, idx: np.ndarray) -> list[MelodyNote]:
    """The chosen notes as a line: each ends at the latest when the next one starts."""
    out: list[MelodyNote] = []
    idx = np.sort(idx)
    for k, i in enumerate(idx):
        end = float(notes.offset[i])
        if k + 1 < len(idx):
            end = min(end, float(notes.onset[idx[k + 1]]))
        out.append(
            MelodyNote(
                float(notes.onset[i]), max(end, float(notes.onset[i]) + 1e-3), int(notes.pitch[i])
            )
        )
    return out
