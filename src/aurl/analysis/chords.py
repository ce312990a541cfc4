"""Beat-synchronous chord recognition (Harte labels) with Viterbi smoothing.

Each beat gets three 12-bin profiles (notes sounding, weighted by time; notes starting; the bass,
see :func:`aurl.analysis.notes.bass_chroma`). A rotation-equivariant linear model scores every
(root, quality) pair from the profiles rotated to that root, and a first-order HMM over
12 roots x :data:`QUALITIES` + ``N`` smooths the sequence: whether the chord changes depends on the
beat's position in the bar, where it goes depends on (old quality, new quality, root interval).
Both the weights and the transition table were fitted on POP909 songs 001-700 by
``benchmarks/fit_chord_model.py`` and live in ``data/chord_model.json`` (a few kB).
Inversions are read afterwards from the bass: ``G:maj/3`` when the lowest notes favour the third.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import symusic

from aurl.analysis.notes import NoteArray, bass_chroma, overlap_matrix, score_notes, segment_chroma
from aurl.analysis.spelling import FLAT_NAMES

ROOT_NAMES = FLAT_NAMES  # internal labels; run.py respells them in the key (spelling.py)
# Harte shorthands and their intervals (semitones above the root).
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
}
QUALITY_NAMES = tuple(QUALITIES)
Q = len(QUALITIES)
N_STATES = 12 * Q + 1  # state s < 12*Q is (root = s // Q, quality = s % Q); the last is N
# Harte bass degrees for inversions, by semitone above the root.
BASS_DEGREE = {
    1: "b2",
    2: "2",
    3: "b3",
    4: "3",
    5: "4",
    6: "b5",
    7: "5",
    8: "#5",
    9: "6",
    10: "b7",
    11: "7",
}
N_FEATURES = 36  # three rotated 12-bin profiles


@dataclass(frozen=True)
class ChordModel:
    """Weights of the per-beat scorer and the transition table (see module docstring)."""

    w1: np.ndarray  # (H, 108) hidden layer on root-rotated features of beats t-1, t, t+1
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (Q, H) quality scores from the hidden layer
    b2: np.ndarray  # (Q,)
    w_n: np.ndarray  # (4,) weights of the no-chord score on [1, log energy, max share, n onsets]
    log_change: np.ndarray  # (4,) log P(change) by beat position in the bar (0 = downbeat)
    log_move: np.ndarray  # (Q+1, Q+1, 12) log P(new quality, root interval | old quality, change)
    emission_scale: float  # weight of the scorer's log-probabilities against the transitions

    @classmethod
    def from_dict(cls, d: dict) -> ChordModel:
        return cls(
            w1=np.asarray(d["w1"], dtype=np.float64),
            b1=np.asarray(d["b1"], dtype=np.float64),
            w2=np.asarray(d["w2"], dtype=np.float64),
            b2=np.asarray(d["b2"], dtype=np.float64),
            w_n=np.asarray(d["w_n"], dtype=np.float64),
            log_change=np.asarray(d["log_change"], dtype=np.float64),
            log_move=np.asarray(d["log_move"], dtype=np.float64),
            emission_scale=float(d["emission_scale"]),
        )


@lru_cache(maxsize=1)
def default_model() -> ChordModel:
    """The committed model fitted on POP909 001-700 (``data/chord_model.json``)."""
    text = resources.files("aurl.analysis").joinpath("data/chord_model.json").read_text()
    return ChordModel.from_dict(json.loads(text))


def beat_features(notes: NoteArray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: (S, 36) profiles [sounding, onsets, bass] each L1-normalised; (S, 3) N-features."""
    dur = segment_chroma(notes, bounds)
    seg = np.searchsorted(bounds, notes.onset, side="right") - 1  # segment of each onset
    inside = (seg >= 0) & (seg < len(bounds) - 1)
    ons = np.zeros((len(bounds) - 1) * 12)
    np.add.at(ons, seg[inside] * 12 + notes.pitch[inside] % 12, notes.velocity[inside] / 127.0)
    ons = ons.reshape(-1, 12)
    n_starts = np.bincount(seg[inside], minlength=len(bounds) - 1)
    bass = bass_chroma(notes, bounds)
    length = np.diff(bounds)[:, None]
    feats = np.concatenate([_l1(dur), _l1(ons), _l1(bass)], axis=1)
    energy = dur.sum(axis=1, keepdims=True) / np.maximum(length, 1e-3)
    extra = np.concatenate(
        [
            np.log1p(energy),
            _l1(dur).max(axis=1, keepdims=True),
            np.log1p(n_starts)[:, None],
        ],
        axis=1,
    )
    return feats, extra


def _l1(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(x.sum(axis=1, keepdims=True), 1e-9)


def rotated(feats: np.ndarray) -> np.ndarray:
    """(S, 12, 108): features of beats t-1, t, t+1 seen from each root r (r moved to index 0)."""
    S = len(feats)
    ctx = np.concatenate(
        [np.r_[feats[:1], feats[:-1]], feats, np.r_[feats[1:], feats[-1:]]], axis=1
    )
    f = ctx.reshape(S, 9, 12)
    idx = (np.arange(12)[:, None] + np.arange(12)[None, :]) % 12  # (root, interval) -> pitch class
    return f[:, :, idx].transpose(0, 2, 1, 3).reshape(S, 12, 108)  # (S, 12 roots, 9*12)


def state_scores(model: ChordModel, feats: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """(S, N_STATES) log-probabilities of each chord state per segment."""
    rot = rotated(feats)  # (S, 12, 108)
    hidden = np.maximum(rot @ model.w1.T + model.b1, 0.0)  # (S, 12, H)
    chord = hidden @ model.w2.T + model.b2  # (S, 12, Q)
    n = model.w_n[0] + extra @ model.w_n[1:]  # (S,)
    logits = np.concatenate([chord.reshape(len(feats), 12 * Q), n[:, None]], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def transition_tensor(model: ChordModel) -> tuple[np.ndarray, np.ndarray]:
    """(N_STATES, N_STATES) log P(next | previous, change) and its diagonal fixed to -inf."""
    qual = np.r_[np.tile(np.arange(Q), 12), Q]  # (N_STATES,) quality index, Q = N
    root = np.r_[np.repeat(np.arange(12), Q), 0]
    interval = (root[None, :] - root[:, None]) % 12
    move = model.log_move[qual[:, None], qual[None, :], interval]  # (from, to)
    move[qual == Q, :] -= 0.0
    np.fill_diagonal(move, -np.inf)
    move -= np.log(np.exp(move).sum(axis=1, keepdims=True))
    return move, qual


def viterbi(
    log_em: np.ndarray, move: np.ndarray, log_change: np.ndarray, pos: np.ndarray
) -> np.ndarray:
    """Best state path; ``pos[t]`` is the bar position of segment t (selects P(change))."""
    S, K = log_em.shape
    # One (from, to) log-transition matrix per bar position: a change costs log P(change) plus
    # the move; staying costs log P(no change) (or the same-state move, if that scores higher)
    # and sits on the diagonal. Four numpy calls a step instead of eight: the loop's overhead,
    # not its arithmetic, is the cost (7.6 -> 5.6 ms a song on POP909 701-800, identical paths).
    # An exact tie between staying and a change from a lower-numbered state now goes to the
    # change (argmax takes the first); staying used to win it.
    states = np.arange(K)
    trans = move[None, :, :] + log_change[:, None, None]  # (positions, from, to)
    stay = np.log1p(-np.exp(log_change))
    trans[:, states, states] = np.maximum(trans[:, states, states], stay[:, None])
    delta = log_em[0].copy()
    back = np.zeros((S, K), dtype=np.int32)
    for t in range(1, S):
        cand = delta[:, None] + trans[pos[t]]  # (from, to)
        best_from = np.argmax(cand, axis=0)
        back[t] = best_from
        delta = cand[best_from, states] + log_em[t]
    path = np.zeros(S, dtype=np.int64)
    path[-1] = int(np.argmax(delta))
    for t in range(S - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def state_label(s: int) -> str:
    if s == 12 * Q:
        return "N"
    return f"{ROOT_NAMES[s // Q]}:{QUALITY_NAMES[s % Q]}"


def label_state(label: str) -> int:
    """Vocabulary state nearest to any Harte label (same root, best interval overlap); N/X -> N."""
    import mir_eval

    root, bitmap, _ = mir_eval.chord.encode(label)
    if root < 0:
        return 12 * Q
    tones = set(np.flatnonzero(bitmap).tolist())
    best, best_j = 0, -1.0
    for qi, iv in enumerate(QUALITIES.values()):
        j = len(tones & set(iv)) / len(tones | set(iv))
        if j > best_j + 1e-9:
            best, best_j = qi, j
    return root * Q + best


@dataclass(frozen=True)
class ChordSegment:
    start: float
    end: float
    label: str


def recognize_chords(
    score: symusic.Score | None = None,
    *,
    notes: NoteArray | None = None,
    beats: np.ndarray | None = None,
    downbeats: np.ndarray | None = None,
    model: ChordModel | None = None,
) -> list[ChordSegment]:
    """Chord segments (Harte labels) of ``score``; beats are inferred unless given."""
    if notes is None:
        if score is None:
            raise ValueError("recognize_chords: pass a score or notes")
        notes = score_notes(score)
    if len(notes) == 0:
        return []
    if beats is None:
        from aurl.analysis.beats import track_beats

        bt = track_beats(score, notes) if score is not None else None
        beats = bt.beats if bt is not None else np.arange(0, notes.end, 0.5)
        downbeats = bt.downbeats if bt is not None else beats[::4]
    model = model or default_model()
    bounds = segment_bounds(beats, notes.end)
    feats, extra = beat_features(notes, bounds)
    log_em = model.emission_scale * state_scores(model, feats, extra)
    move, _ = transition_tensor(model)
    pos = bar_positions(bounds[:-1], downbeats)
    path = viterbi(log_em, move, model.log_change, pos)
    return _segments(feats[:, 24:36], bounds, path)


def segment_bounds(beats: np.ndarray, end: float) -> np.ndarray:
    """Segment edges: 0 (if the first beat is late, a pickup segment), the beats, and the end."""
    period = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    b = np.asarray(beats, dtype=np.float64)
    if len(b) == 0:
        return np.array([0.0, max(end, 1e-3)])
    edges = list(b)
    if b[0] > 1e-3:
        edges.insert(0, 0.0)
    last = max(end, b[-1] + period)
    edges.append(min(last, b[-1] + period) if end <= b[-1] + period else b[-1] + period)
    return np.asarray(edges)


def bar_positions(starts: np.ndarray, downbeats: np.ndarray | None) -> np.ndarray:
    """Beat position inside its bar, 0..3 (positions past 3 fold onto 3)."""
    if downbeats is None or len(downbeats) == 0:
        return np.zeros(len(starts), dtype=np.int64)
    i = np.searchsorted(downbeats, starts + 1e-3, side="right") - 1
    period = float(np.median(np.diff(starts))) if len(starts) > 1 else 0.5
    pos = np.where(i >= 0, np.round((starts - downbeats[np.maximum(i, 0)]) / max(period, 1e-3)), 0)
    return np.clip(pos, 0, 3).astype(np.int64)


def _segments(bass: np.ndarray, bounds: np.ndarray, path: np.ndarray) -> list[ChordSegment]:
    """Runs of equal (chord, bass degree); a bass run shorter than 2 beats joins the run before it."""
    inv = _inversions(bass, path)
    for t in range(1, len(path)):
        if path[t] != path[t - 1]:
            continue
        run_end = t
        while run_end < len(path) and path[run_end] == path[t] and inv[run_end] == inv[t]:
            run_end += 1
        if run_end - t < 2 and inv[t] != inv[t - 1]:
            inv[t:run_end] = [inv[t - 1]] * (run_end - t)
    out: list[ChordSegment] = []
    key = [(int(path[t]), inv[t]) for t in range(len(path))]
    start = 0
    for t in range(1, len(path) + 1):
        if t == len(path) or key[t] != key[start]:
            s, iv = key[start]
            out.append(ChordSegment(float(bounds[start]), float(bounds[t]), state_label(s) + iv))
            start = t
    return out


def _inversions(bass: np.ndarray, path: np.ndarray) -> list[str]:
    """Per segment, a ``/3``-style suffix when the bass profile's strongest pitch class is a
    non-root tone of the segment's chord (one vectorised pass; a per-segment loop of argmax calls
    cost 1.5 ms a song)."""
    tone_table = np.zeros((Q, 12), dtype=bool)  # quality, interval -> chord tone
    for qi, tones in enumerate(QUALITIES.values()):
        tone_table[qi, list(tones)] = True
    chord = path < 12 * Q
    q = np.where(chord, path % Q, 0)
    iv = (np.argmax(bass, axis=1) - np.where(chord, path // Q, 0)) % 12
    has = chord & (bass.sum(axis=1) > 0) & (iv != 0) & tone_table[q, iv]
    return [f"/{BASS_DEGREE[int(i)]}" if h else "" for i, h in zip(iv, has, strict=True)]


__all__ = ["ChordModel", "ChordSegment", "overlap_matrix", "recognize_chords"]
