"""Global key and key-change segmentation over 24 keys (12 tonics x major/minor).

Two methods (``KeyConfig.method``):

- ``network`` (default): the transposition-equivariant convolution of
  :mod:`aurl.analysis.key_network` scores every beat; the scores summed over windows of a few beats
  go through a Viterbi with a penalty per key change. Fitted on POP909 001-700 and the Bach
  training chorales; on POP909 601-700 (fitted on 001-600) 0.930 against 0.921 for the profile
  HMM below (BENCHMARKS.md, "Analysis").
- ``profiles``: an HMM whose emissions are key profiles. Per beat, a pitch-class profile
  (time-weighted, plus the bass profile times ``bass_weight``); profiles summed over windows of
  ``window_beats``; each window scored against the 24 rotated key profiles by Pearson correlation
  (Krumhansl–Schmuckler style); Viterbi with a key-change penalty per window gives the
  segmentation. Profile sets (all 12 values from the tonic up):

- ``krumhansl``: Krumhansl & Kessler (1982) probe-tone ratings.
- ``temperley``: Temperley (2007) Kostka–Payne corpus frequencies.
- ``albrecht``: Albrecht & Shanahan (2013) corpus profiles.
- ``pop909``: learned from POP909 001-700 by ``benchmarks/fit_key_profiles.py`` (time-weighted
  mean profile per mode over the annotated key spans), with a separate bass profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import symusic

from aurl.analysis.notes import NoteArray, bass_chroma, score_notes, segment_chroma
from aurl.analysis.spelling import FLAT_NAMES, tonic_name

# Pitch-class names for tables and fits; key labels spell their tonic by convention (key_label).
TONICS = FLAT_NAMES
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "krumhansl": (
        (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
        (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
    ),
    "temperley": (
        (0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400),
        (0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330),
    ),
    "albrecht": (
        (0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081),
        (0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052),
    ),
    "pop909": (
        (0.216, 0.001, 0.132, 0.002, 0.146, 0.088, 0.003, 0.208, 0.005, 0.126, 0.005, 0.067),
        (0.23, 0.002, 0.083, 0.146, 0.003, 0.123, 0.001, 0.199, 0.069, 0.004, 0.128, 0.011),
    ),
}
# Bass profiles where a set has its own (otherwise the bass is scored with the main profile).
BASS_PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "pop909": (
        (0.24, 0.001, 0.099, 0.002, 0.089, 0.171, 0.005, 0.229, 0.006, 0.123, 0.009, 0.026),
        (0.263, 0.003, 0.023, 0.114, 0.002, 0.132, 0.001, 0.173, 0.136, 0.005, 0.145, 0.004),
    ),
}


@dataclass(frozen=True)
class KeyConfig:
    """How the key is estimated; defaults tuned on POP909 001-700 (benchmarks/bench_analysis.py)."""

    method: str = "network"  # "network" (key_network) or "profiles" (the settings below)
    profiles: str = "pop909"  # one of PROFILES
    bass_weight: float = 0.5  # extra weight of the bass profile (the bass states the tonic)
    window_beats: int = 8  # beats per HMM observation (two bars of 4/4)
    change_penalty: float = 8.0  # log-odds against a key change between windows
    sharpness: float = 6.0  # scale of the correlation in the emission log-likelihood

    def __post_init__(self) -> None:
        if self.method not in ("network", "profiles"):
            raise ValueError(f"KeyConfig.method={self.method!r}; use 'network' or 'profiles'")
        if self.profiles not in PROFILES:
            raise ValueError(f"KeyConfig.profiles={self.profiles!r}; use one of {sorted(PROFILES)}")
        if self.window_beats < 1:
            raise ValueError(f"KeyConfig.window_beats={self.window_beats}; must be >= 1")


@dataclass(frozen=True)
class KeySegment:
    start: float
    end: float
    label: str  # "C:maj", "A:min"


def key_label(k: int) -> str:
    """State k < 12: major on tonic k; k >= 12: minor on tonic k - 12 (``F#:min``, ``Eb:maj``:
    the tonic spelled as its key signature writes it, :func:`aurl.analysis.spelling.tonic_name`)."""
    return f"{tonic_name(k % 12, k >= 12)}:{'maj' if k < 12 else 'min'}"


def key_templates(profiles: str, bass: bool = False) -> np.ndarray:
    """(24, 12) z-scored profiles: rows 0-11 major on C..B, 12-23 minor."""
    table = BASS_PROFILES if bass and profiles in BASS_PROFILES else PROFILES
    major, minor = (np.asarray(p, dtype=np.float64) for p in table[profiles])
    rows = [np.roll(major, k) for k in range(12)] + [np.roll(minor, k) for k in range(12)]
    t = np.asarray(rows)
    return (t - t.mean(axis=1, keepdims=True)) / t.std(axis=1, keepdims=True)


def correlations(chroma: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(W, 24) Pearson correlation of each window profile with each key."""
    z = chroma - chroma.mean(axis=1, keepdims=True)
    z = z / np.maximum(chroma.std(axis=1, keepdims=True), 1e-9)
    return z @ templates.T / 12.0


def key_scores(sounding: np.ndarray, bass: np.ndarray, cfg: KeyConfig) -> np.ndarray:
    """(W, 24) correlation of the sounding profile plus ``bass_weight`` x that of the bass profile."""
    t_main, t_bass = key_templates(cfg.profiles), key_templates(cfg.profiles, bass=True)
    return correlations(sounding, t_main) + cfg.bass_weight * correlations(bass, t_bass)


def estimate_keys(
    score: symusic.Score | None = None,
    *,
    notes: NoteArray | None = None,
    beats: np.ndarray | None = None,
    downbeats: np.ndarray | None = None,
    cfg: KeyConfig | None = None,
) -> list[KeySegment]:
    """Key segments covering the piece (one segment when the key never changes).

    ``downbeats`` (bar starts) help the network method; without them every beat counts as a
    downbeat."""
    cfg = cfg or KeyConfig()
    if notes is None:
        if score is None:
            raise ValueError("estimate_keys: pass a score or notes")
        notes = score_notes(score)
    if len(notes) == 0:
        return []
    if beats is None or len(beats) < 2:
        beats = np.arange(0.0, notes.end + 0.5, 0.5)
    if cfg.method == "network":
        return _network_keys(notes, np.asarray(beats, dtype=np.float64), downbeats)
    period = float(np.median(np.diff(beats)))
    edges = (
        np.r_[0.0, beats[beats > 1e-3], beats[-1] + period]
        if beats[0] > 1e-3
        else np.r_[beats, beats[-1] + period]
    )
    sounding, bass = segment_chroma(notes, edges), bass_chroma(notes, edges)  # (S, 12) each
    win_s, win_b = _window_sums(sounding, cfg.window_beats), _window_sums(bass, cfg.window_beats)
    n_win = len(win_s)
    total = key_scores(sounding.sum(axis=0, keepdims=True), bass.sum(axis=0, keepdims=True), cfg)[0]
    corr = key_scores(win_s, win_b, cfg)
    active = win_s.sum(axis=1) > 0
    log_em = np.where(active[:, None], cfg.sharpness * corr, 0.0)
    # The whole-piece profile is a prior on every window: a key change must be worth it locally.
    log_em = log_em + cfg.sharpness * total[None, :] / max(n_win, 1) ** 0.5
    return _path_segments(_viterbi(log_em, cfg.change_penalty), edges, cfg.window_beats)


def _network_keys(
    notes: NoteArray, beats: np.ndarray, downbeats: np.ndarray | None
) -> list[KeySegment]:
    from aurl.analysis.chords import bar_positions, beat_features, segment_bounds
    from aurl.analysis.key_network import default_model

    model = default_model()
    bounds = segment_bounds(beats, notes.end)
    feats, extra = beat_features(notes, bounds)
    pos = bar_positions(bounds[:-1], downbeats if downbeats is not None else beats)
    lp = model.log_probs(feats, extra, pos)
    return network_segments(lp, bounds, model.window_beats, model.change_penalty)


def network_segments(
    log_probs: np.ndarray, bounds: np.ndarray, window_beats: int, change_penalty: float
) -> list[KeySegment]:
    """Key segments from (S, 24) per-beat log-probabilities: summed over windows of
    ``window_beats`` beats, then a Viterbi with ``change_penalty`` per change."""
    path = _viterbi(_window_sums(log_probs, window_beats), change_penalty)
    return _path_segments(path, bounds, window_beats)


def _window_sums(x: np.ndarray, w: int) -> np.ndarray:
    """(S, K) per-beat rows -> (ceil(S / w), K) sums over consecutive windows of w beats."""
    n_win = int(np.ceil(len(x) / w))
    pad = np.zeros((n_win * w - len(x), x.shape[1]))
    return np.concatenate([x, pad]).reshape(n_win, w, x.shape[1]).sum(axis=1)


def _path_segments(path: np.ndarray, edges: np.ndarray, w: int) -> list[KeySegment]:
    """Runs of equal key along the window path; ``edges`` are the beat segment edges."""
    win_edges = np.r_[edges[:-1:w], edges[-1]]
    out: list[KeySegment] = []
    start = 0
    for t in range(1, len(path) + 1):
        if t == len(path) or path[t] != path[start]:
            out.append(
                KeySegment(float(win_edges[start]), float(win_edges[t]), key_label(path[start]))
            )
            start = t
    return out


def global_key(segments: list[KeySegment]) -> str:
    """The key covering the most time."""
    if not segments:
        return "N"
    dur: dict[str, float] = {}
    for s in segments:
        dur[s.label] = dur.get(s.label, 0.0) + s.end - s.start
    return max(dur, key=dur.__getitem__)


def _viterbi(log_em: np.ndarray, penalty: float) -> np.ndarray:
    T, K = log_em.shape
    delta = log_em[0].copy()
    back = np.zeros((T, K), dtype=np.int64)
    for t in range(1, T):
        best = int(np.argmax(delta))
        switch = delta[best] - penalty
        stay = delta >= switch
        back[t] = np.where(stay, np.arange(K), best)
        delta = np.where(stay, delta, switch) + log_em[t]
    path = np.zeros(T, dtype=np.int64)
    path[-1] = int(np.argmax(delta))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path
