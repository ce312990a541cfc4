"""Beats and bars of any MIDI: from the tempo map when the notes agree with it, else from the notes.

A quantized file (a DAW export, POP909) carries a tempo map whose beat period is right but whose
phase may be off (POP909's notes sit 1/12 of a beat after the tick grid) and whose time signature
is often wrong (115 of POP909 001–200 say 1/4). A performance (MAESTRO) has a default 120 BPM map
unrelated to the music. So:

1. Tempo map: beat ticks ``k * tpq`` shifted by the phase that best fits the note onsets; kept when
   at least :data:`GRID_FIT_MIN` of the onset weight falls on that shifted 16th-note grid.
2. Otherwise: onset-strength envelope, tempo by autocorrelation with a log-normal prior, beats by
   dynamic programming (Ellis 2007, "Beat tracking by dynamic programming", JNMR 36(1)).
3. Downbeats (both cases), never from the file's time signature: the bar length (2, 3 or 4 beats)
   whose beats carry the most bass onsets and harmonic changes; then the bar phase that maximises
   a learned linear score of per-beat evidence (:func:`beat_evidence`: chord change over 1, 2 and
   4 beats, bass onsets, onset count and loudness, long notes, bass change, melody onsets and the
   length of melody notes). The weights (``data/downbeat_phase.json``) were fitted on POP909 001-600 by
   ``benchmarks/fit_downbeat_phase.py`` so that bars start where the annotated phrases do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import symusic

from aurl.analysis.notes import NoteArray, bass_chroma, is_tick, score_notes, segment_chroma

# Share of onset weight within 1/24 beat of the phase-shifted 16th grid needed to trust the tempo
# map. Random onsets land there 33 % of the time; quantized POP909 songs score 0.97-1.0.
GRID_FIT_MIN = 0.75
PHASE_BINS = 96  # tick phase resolution when fitting the grid offset (1/96 beat)
ENVELOPE_FPS = 50  # onset envelope frame rate for note-based tracking (20 ms)


N_EVIDENCE = 11  # columns of :func:`beat_evidence`


@lru_cache(maxsize=1)
def phase_weights() -> np.ndarray:
    """Weights of the bar-phase score over :func:`beat_evidence` (``data/downbeat_phase.json``)."""
    text = resources.files("aurl.analysis").joinpath("data/downbeat_phase.json").read_text()
    w = np.asarray(json.loads(text)["weights"], dtype=np.float64)
    if w.shape != (N_EVIDENCE,):
        raise ValueError(f"downbeat_phase.json: {w.shape[0]} weights, expected {N_EVIDENCE}")
    return w


@dataclass(frozen=True)
class Beats:
    """Beat and downbeat times in seconds, and where they came from."""

    beats: np.ndarray  # (B,) seconds, increasing
    downbeats: np.ndarray  # (D,) seconds, a subset of beats
    beats_per_bar: int
    source: str  # "tempo_map" or "notes"
    grid_fit: float  # share of onset weight on the tempo map's (shifted) 16th grid

    @property
    def period(self) -> float:
        return float(np.median(np.diff(self.beats))) if len(self.beats) > 1 else 0.5


def _tick_to_seconds(score: symusic.Score, ticks: np.ndarray) -> np.ndarray:
    """Seconds of ``ticks`` under the score's tempo map (120 BPM before the first tempo)."""
    tpq = score.ticks_per_quarter
    tempos = sorted(((t.time, t.mspq) for t in score.tempos), key=lambda x: x[0])
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, 500_000))
    t_ticks = np.array([t for t, _ in tempos], dtype=np.float64)
    spt = np.array([m for _, m in tempos], dtype=np.float64) / 1e6 / tpq  # seconds per tick
    seg_sec = np.concatenate([[0.0], np.cumsum(np.diff(t_ticks) * spt[:-1])])
    i = np.searchsorted(t_ticks, ticks, side="right") - 1
    return seg_sec[i] + (ticks - t_ticks[i]) * spt[i]


def _onset_ticks(score: symusic.Score) -> tuple[np.ndarray, np.ndarray]:
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        return np.zeros(0), np.zeros(0)
    time = np.concatenate([p["time"] for p in parts]).astype(np.float64)
    dur = np.concatenate([p["duration"] for p in parts]).astype(np.float64)
    pitch = np.concatenate([p["pitch"] for p in parts]).astype(np.float64)
    # Long and low notes mark beats more than short high ornaments.
    w = np.sqrt(np.clip(dur / score.ticks_per_quarter, 0.05, 4.0)) * (1.0 + (pitch < 55))
    return time, w


def tempo_map_grid(score: symusic.Score) -> tuple[np.ndarray, float]:
    """Beat times from the tempo map shifted to fit the onsets, and the grid fit (0..1)."""
    if not is_tick(score):
        return np.zeros(0), 0.0
    tpq = score.ticks_per_quarter
    ticks, w = _onset_ticks(score)
    if len(ticks) < 8:
        return np.zeros(0), 0.0
    phase = (ticks % tpq) / tpq  # (N,) 0..1
    bins = np.floor(phase * PHASE_BINS).astype(int) % PHASE_BINS
    hist = np.bincount(bins, weights=w, minlength=PHASE_BINS)
    # Smooth circularly over +-1 bin, then take the strongest phase as the beat position.
    smooth = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
    offset = int(np.argmax(smooth)) / PHASE_BINS  # beats
    rel = (phase - offset) % 0.25 / 0.25  # position inside the 16th, 0..1
    near = np.minimum(rel, 1 - rel) * 0.25 <= 1 / 24
    fit = float(w[near].sum() / w.sum())
    end_tick = max(t.end() for t in score.tracks if len(t.notes))
    k = np.arange(0, end_tick / tpq + 1.0)
    if offset > 0.5:
        offset -= 1.0
    beat_ticks = (k + offset) * tpq
    beat_ticks = beat_ticks[beat_ticks >= 0]
    return _tick_to_seconds(score, beat_ticks), fit


def onset_envelope(notes: NoteArray, fps: int = ENVELOPE_FPS) -> np.ndarray:
    """(T,) onset strength: velocity-weighted onsets smoothed by a 2-frame Gaussian."""
    n = int(np.ceil(notes.end * fps)) + fps
    env = np.zeros(n)
    frames = np.clip(np.round(notes.onset * fps).astype(int), 0, n - 1)
    low = 1.0 + (notes.pitch < 55)
    np.add.at(env, frames, notes.velocity / 127.0 * low)
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)
    return np.convolve(env, kernel / kernel.sum(), mode="same")


def estimate_period(env: np.ndarray, fps: int = ENVELOPE_FPS) -> float:
    """Beat period in seconds: autocorrelation peak weighted by a log-normal prior at 0.5 s."""
    e = env - env.mean()
    nfft = 1 << int(np.ceil(np.log2(2 * len(e))))
    spec = np.fft.rfft(e, nfft)
    ac = np.fft.irfft(spec * np.conj(spec), nfft)[: len(e)]
    lags = np.arange(int(0.3 * fps), int(1.5 * fps))
    prior = np.exp(-0.5 * (np.log2(lags / (0.5 * fps)) / 0.9) ** 2)
    # Sum the lag and its double so that a 16th-note pulse does not win over the beat.
    score = ac[lags] + 0.5 * ac[np.minimum(2 * lags, len(ac) - 1)]
    return float(lags[np.argmax(score * prior)]) / fps


def dp_beats(env: np.ndarray, period_s: float, fps: int = ENVELOPE_FPS, tightness: float = 100.0):
    """Ellis (2007) dynamic-programming beat tracker: beat frames maximising onset + regularity."""
    period = period_s * fps
    n = len(env)
    score = env.copy()
    back = -np.ones(n, dtype=int)
    lo, hi = round(period / 2), round(2 * period)
    taus = np.arange(lo, hi + 1)
    penalty = -tightness * np.log(taus / period) ** 2
    for t in range(lo, n):
        prev = t - taus
        ok = prev >= 0
        cand = score[prev[ok]] + penalty[ok]
        j = int(np.argmax(cand))
        if cand[j] > 0:
            score[t] = env[t] + cand[j]
            back[t] = prev[ok][j]
    # Start from the best frame in the last period and follow the back pointers.
    t = n - hi + int(np.argmax(score[-hi:])) if n > hi else int(np.argmax(score))
    out = [t]
    while back[out[-1]] >= 0:
        out.append(back[out[-1]])
    return np.array(out[::-1], dtype=np.float64) / fps


def beat_evidence(
    notes: NoteArray, beats: np.ndarray, melody: np.ndarray | None = None
) -> np.ndarray:
    """(B, 11) per-beat evidence that a bar starts there, each column z-scored over the piece.

    Columns: chroma change from the previous beat; chroma change between the 2 and the 4 beats
    before and after; bass onsets (low and long); onsets below E3; onset count; onset loudness;
    notes held longer than 1.5 beats; change of the bass profile; melody onsets; log length of
    the melody notes starting there. ``melody`` holds indices into ``notes`` (none: zero columns).
    """
    n_beats = len(beats)
    period = float(np.median(np.diff(beats)))
    bounds = np.concatenate([beats, [beats[-1] + period]])
    chroma = segment_chroma(notes, bounds)
    csum = np.concatenate([np.zeros((1, 12)), np.cumsum(chroma, axis=0)])
    k = np.arange(n_beats)

    def change(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        nx = np.linalg.norm(x, axis=1) + 1e-9
        ny = np.linalg.norm(y, axis=1) + 1e-9
        return 1.0 - (x * y).sum(axis=1) / nx / ny

    def block_change(w: int) -> np.ndarray:
        before = csum[k] - csum[np.maximum(k - w, 0)]
        after = csum[np.minimum(k + w, n_beats)] - csum[k]
        return change(before, after)

    change1 = np.r_[0.0, change(chroma[1:], chroma[:-1])]
    bass_prof = bass_chroma(notes, bounds)
    bass_change = np.r_[0.0, change(bass_prof[1:], bass_prof[:-1])]
    idx = np.searchsorted(beats, notes.onset - 0.15 * period)
    on_beat = (idx < n_beats) & (
        np.abs(beats[np.minimum(idx, n_beats - 1)] - notes.onset) < 0.15 * period
    )
    dur = notes.offset - notes.onset

    def on(weight: np.ndarray) -> np.ndarray:
        out = np.zeros(n_beats)
        np.add.at(out, idx[on_beat], weight[on_beat])
        return out

    low = np.clip((60 - notes.pitch) / 24.0, 0, 1)
    mel = np.zeros(len(notes))
    mel_dur = np.zeros(len(notes))
    if melody is not None and len(melody):
        mel[melody] = 1.0
        mel_dur[melody] = np.log1p(dur[melody] / period)
    cols = [
        change1,
        block_change(2),
        block_change(4),
        on(low * np.sqrt(dur)),
        on((notes.pitch < 52).astype(np.float64)),
        on(np.ones(len(notes))),
        on(notes.velocity / 127.0),
        on((dur > 1.5 * period).astype(np.float64)),
        bass_change,
        on(mel),
        on(mel_dur),
    ]
    return np.stack([_z(np.asarray(c, dtype=np.float64)) for c in cols], axis=1)


def phase_evidence(evidence: np.ndarray, m: int) -> np.ndarray:
    """(m, F): mean evidence on the beats ``ph::m`` minus the mean over all beats, per phase."""
    return np.stack([evidence[ph::m].mean(axis=0) - evidence.mean(axis=0) for ph in range(m)])


def downbeat_phase(
    notes: NoteArray, beats: np.ndarray, melody: np.ndarray | None = None
) -> tuple[int, int]:
    """(beats_per_bar, index of the first downbeat).

    The bar length is :func:`bar_length`'s; the phase is then chosen by the learned score over
    :func:`beat_evidence`.
    """
    if len(beats) < 8:
        return 4, 0
    m = bar_length(notes, beats)
    score = phase_evidence(beat_evidence(notes, beats, melody), m) @ phase_weights()
    return m, int(np.argmax(score))


def bar_length(notes: NoteArray, beats: np.ndarray) -> int:
    """Beats per bar (2, 3 or 4): the one whose best phase carries most bass onsets and changes."""
    if len(beats) < 8:
        return 4
    period = float(np.median(np.diff(beats)))
    bounds = np.concatenate([beats, [beats[-1] + period]])
    chroma = segment_chroma(notes, bounds)
    norm = chroma / (np.linalg.norm(chroma, axis=1, keepdims=True) + 1e-9)
    change = np.r_[0.0, 1.0 - (norm[1:] * norm[:-1]).sum(axis=1)]
    idx = np.searchsorted(beats, notes.onset - 0.15 * period)
    on_beat = (idx < len(beats)) & (
        np.abs(beats[np.minimum(idx, len(beats) - 1)] - notes.onset) < 0.15 * period
    )
    bass = np.zeros(len(beats))
    low = np.clip((60 - notes.pitch) / 24.0, 0, 1) * np.sqrt(notes.offset - notes.onset)
    np.add.at(bass, idx[on_beat], low[on_beat])
    ev = _z(change) + _z(bass)
    best, best_score = (4, 0), -np.inf
    for m, prior in ((4, 0.15), (3, 0.0), (2, -0.3)):
        for ph in range(m):
            down = ev[ph::m]
            s = down.mean() - ev.mean() + prior
            if s > best_score:
                best, best_score = (m, ph), s
    return best[0]


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def track_beats(
    score: symusic.Score, notes: NoteArray | None = None, melody: np.ndarray | None = None
) -> Beats:
    """Beats and downbeats of ``score`` (see the module docstring for the method).

    ``melody``: indices into ``notes`` of the melody line (``melody.extract_melody``); found here
    when not given (the bar phase uses it).
    """
    notes = score_notes(score) if notes is None else notes
    if melody is None and len(notes):
        from aurl.analysis.melody import extract_melody

        melody = extract_melody(notes=notes)
    if len(notes) == 0:
        return Beats(np.zeros(0), np.zeros(0), 4, "notes", 0.0)
    grid, fit = tempo_map_grid(score)
    if len(grid) >= 4 and fit >= GRID_FIT_MIN:
        beats, source = grid, "tempo_map"
    else:
        env = onset_envelope(notes)
        beats, source = dp_beats(env, estimate_period(env)), "notes"
    beats = beats[beats < notes.end - 1e-6]  # no beat after the music has ended
    m, ph = downbeat_phase(notes, beats, melody)
    return Beats(beats, beats[ph::m], m, source, fit)
