"""Per-piece musical features: one pure function each, in a name -> spec registry.

A feature takes a :class:`Piece` (the notes of one ``symusic.Score`` as arrays, in beats and in
seconds) and returns a float (``kind="scalar"``) or a fixed-length vector (``kind="histogram"``).
Features are registered at import time with the :func:`feature` decorator or :func:`register`, so
another module (``aurl.evaluation.analysis_features``) can add its own; the runner takes whatever
is registered when it runs.

Conventions (chosen here, stated because the field's tools disagree):

- **Beats** are quarter notes (``ticks / tpq``), whatever the time signature: a 6/8 bar is 3 beats.
  Bars come from the piece's time-signature map (4/4 when it has none). Musical features (durations,
  IOIs, density, empty beats, groove) are in beats, so a tempo change does not change them;
  acoustic ones (``notes_per_second``) are in seconds through the tempo map (``Score.to("second")``).
- **Drums** (tracks with ``is_drum``) are left out of every pitch feature (a drum "pitch" is an
  instrument, not a note) and of durations and polyphony (a drum hit's MIDI length is arbitrary);
  they count for onsets (IOI, density, groove), for empty beats and for ``programs_used``.
- **Scale consistency** (MusPy ``scale_consistency``): the largest fraction of notes, by **count**,
  whose pitch class lies in one of the 12 diatonic collections. MusPy also tries 12 natural-minor
  scales, which are the same pitch sets as the relative majors, so its 24 candidates are 12.
- **In-key rate** (MusPy ``pitch_in_scale_rate`` asks for a fixed root and mode, C major by default):
  the fraction of notes, by **count**, in the scale of the piece's own key, estimated by
  Krumhansl–Schmuckler (correlation of the duration-weighted pitch-class profile with the
  Krumhansl–Kessler profiles, 24 keys). A minor key's scale is the natural minor plus the raised 7th
  (the leading tone), as common-practice music uses it.
- **Empty beats** (MusPy ``empty_beat_rate`` counts beats with no *onset*, so a held whole note makes
  three "empty" beats): here a beat is empty when *nothing sounds* in it — a real rest.
- **Groove consistency** (Wu & Yang 2020; MusPy): 1 − mean Hamming distance between the onset
  patterns of neighbouring bars on a 1/8-beat grid, divided by the grid positions per bar.
- Features that are undefined for a piece (a pitch feature of a drums-only piece) are NaN and are
  left out of that feature's comparison.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

STEPS_PER_BEAT = 8  # the onset grid of groove consistency: 32nd notes, as the tokenizers use

# Duration / IOI bin edges in beats: one bin per power of two around 1/8 .. 8 beats, then > 12.
DURATION_EDGES = np.array([0.0, 0.1875, 0.375, 0.75, 1.5, 3.0, 6.0, 12.0, np.inf])
DURATION_LABELS = ["≤⅛", "¼", "½", "1", "2", "4", "8", ">12"]
INTERVAL_MAX = 12  # top-voice intervals are clipped to ±1 octave (25 bins)

# Krumhansl & Kessler (1982) key profiles, tonic first (Krumhansl 1990, "Cognitive Foundations").
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor + leading tone
PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


@dataclass(frozen=True)
class Piece:
    """The notes of one score, sorted by onset; times in quarter-note beats and in seconds."""

    onset: np.ndarray  # (N,) beats
    duration: np.ndarray  # (N,) beats
    onset_s: np.ndarray  # (N,) seconds
    duration_s: np.ndarray  # (N,) seconds
    pitch: np.ndarray  # (N,) MIDI pitch
    program: np.ndarray  # (N,) MIDI program, -1 for drums
    drum: np.ndarray  # (N,) bool
    bars: np.ndarray  # (B+1,) bar-line times in beats, covering every note
    name: str = ""

    @property
    def pitched(self) -> np.ndarray:
        return ~self.drum

    @property
    def end(self) -> float:
        return float((self.onset + self.duration).max()) if len(self.onset) else 0.0


def bar_lines(time_signatures: list[tuple[float, int, int]], end: float) -> np.ndarray:
    """Bar-line times in beats up to ``end`` from ``[(beat, numerator, denominator)]`` (pure)."""
    sigs = sorted(time_signatures) or [(0.0, 4, 4)]
    if sigs[0][0] > 0:
        sigs.insert(0, (0.0, 4, 4))
    lines: list[float] = []
    for k, (start, num, den) in enumerate(sigs):
        length = num * 4.0 / den if num > 0 and den > 0 else 4.0
        stop = sigs[k + 1][0] if k + 1 < len(sigs) else max(end, start + length)
        t = start
        while t < stop - 1e-9:
            lines.append(t)
            t += length
    lines.append(t)
    return np.asarray(lines, dtype=np.float64)


def piece_from_score(score, name: str = "") -> Piece:
    """A :class:`Piece` from a ``symusic.Score`` (any time unit; tempo map used for seconds)."""
    tick = score.to("tick")
    sec = tick.to("second")
    tpq = float(tick.ticks_per_quarter)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("t", "d", "ts", "ds", "p", "g", "dr")}
    for track, track_s in zip(tick.tracks, sec.tracks, strict=True):
        notes, notes_s = track.notes.numpy(), track_s.notes.numpy()
        n = len(notes["time"])
        if n == 0:
            continue
        cols["t"].append(notes["time"].astype(np.float64) / tpq)
        cols["d"].append(notes["duration"].astype(np.float64) / tpq)
        cols["ts"].append(notes_s["time"].astype(np.float64))
        cols["ds"].append(notes_s["duration"].astype(np.float64))
        cols["p"].append(notes["pitch"].astype(np.int64))
        cols["g"].append(np.full(n, -1 if track.is_drum else int(track.program), dtype=np.int64))
        cols["dr"].append(np.full(n, bool(track.is_drum)))
    if not cols["t"]:
        empty_f, empty_i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return Piece(empty_f, empty_f, empty_f, empty_f, empty_i, empty_i,
                     np.zeros(0, dtype=bool), np.zeros(1), name)  # fmt: skip
    arr = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((arr["p"], arr["t"]))
    arr = {k: v[order] for k, v in arr.items()}
    end = float((arr["t"] + arr["d"]).max())
    sigs = [(ts.time / tpq, int(ts.numerator), int(ts.denominator)) for ts in tick.time_signatures]
    return Piece(arr["t"], np.maximum(arr["d"], 0.0), arr["ts"], np.maximum(arr["ds"], 0.0),
                 arr["p"], arr["g"], arr["dr"], bar_lines(sigs, end), name)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class FeatureSpec:
    """One registered feature: how to compute it and how to read it."""

    name: str
    fn: Callable[[Piece], float | np.ndarray]
    kind: str  # "scalar" or "histogram"
    unit: str  # what the number is measured in ("beats", "seconds", "semitones", "fraction", ...)
    description: str  # one plain sentence a musician can read
    labels: list[str] = field(default_factory=list)  # histogram bin labels
    time_base: str = "none"  # "beats", "seconds" or "none" (timeless: pitch content)
    title: str = ""  # a short plain-words name for the report (defaults to the name)

    def __post_init__(self) -> None:
        if self.kind not in ("scalar", "histogram"):
            raise ValueError(f"feature {self.name}: kind={self.kind!r}, expected scalar|histogram")
        if self.time_base not in ("beats", "seconds", "none"):
            raise ValueError(f"feature {self.name}: time_base={self.time_base!r}")


FEATURES: dict[str, FeatureSpec] = {}


def register(spec: FeatureSpec, *, replace: bool = False) -> FeatureSpec:
    """Add ``spec`` to :data:`FEATURES`; a second feature of the same name is an error."""
    if spec.name in FEATURES and not replace:
        raise ValueError(f"feature {spec.name!r} is already registered")
    FEATURES[spec.name] = spec
    return spec


def feature(
    name: str,
    *,
    kind: str = "scalar",
    unit: str,
    description: str,
    labels: list[str] | None = None,
    time_base: str = "none",
    title: str = "",
) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(piece) -> float | np.ndarray`` as feature ``name``."""

    def wrap(fn: Callable) -> Callable:
        register(
            FeatureSpec(name, fn, kind, unit, description, list(labels or []), time_base, title)
        )
        return fn

    return wrap


def compute_features(piece: Piece, names: list[str] | None = None) -> dict[str, object]:
    """``{name: value}`` for the registered features (all, or ``names``)."""
    return {n: FEATURES[n].fn(piece) for n in (names or list(FEATURES))}


# ---------------------------------------------------------------------------------------------
# helpers (pure)


def pitch_class_counts(piece: Piece, weight: str = "count") -> np.ndarray:
    """(12,) pitch-class totals of the pitched notes, by note ``count`` or by ``duration``."""
    mask = piece.pitched
    w = piece.duration[mask] if weight == "duration" else None
    return np.bincount(piece.pitch[mask] % 12, weights=w, minlength=12).astype(np.float64)


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.sqrt((x * x).sum(axis=-1, keepdims=True))


# (24, 12): the 12 major then the 12 minor profiles rotated to each tonic, z-scored, so that a
# profile's Pearson correlation with every key is one matrix product
_KEY_PROFILES = _zscore(
    np.stack([np.roll(ref, t) for ref in (KK_MAJOR, KK_MINOR) for t in range(12)])
)


def estimate_key(piece: Piece) -> tuple[int, str, float]:
    """(tonic pitch class, "major"|"minor", correlation): Krumhansl–Schmuckler on durations."""
    profile = pitch_class_counts(piece, "duration")
    if profile.sum() <= 0 or np.ptp(profile) == 0:
        return 0, "major", float("nan")
    r = _KEY_PROFILES @ _zscore(profile)  # (24,) Pearson correlations
    k = int(np.argmax(r))
    return k % 12, "major" if k < 12 else "minor", float(r[k])


def scale_mask(tonic: int, mode: str) -> np.ndarray:
    """(12,) bool: the pitch classes of ``tonic``'s scale (see the module docstring for minor)."""
    mask = np.zeros(12, dtype=bool)
    mask[[(tonic + d) % 12 for d in (MAJOR_SCALE if mode == "major" else MINOR_SCALE)]] = True
    return mask


def top_voice(piece: Piece) -> np.ndarray:
    """Skyline melody: pitches of the notes that are the highest sounding note at their onset.

    A note joins the top voice when nothing higher is still sounding when it starts (of several
    notes starting together, the highest), so a held soprano hides the moving inner voices.
    """
    mask = piece.pitched
    onset, end, pitch = piece.onset[mask], (piece.onset + piece.duration)[mask], piece.pitch[mask]
    top: list[int] = []
    active: list[tuple[int, float]] = []  # max-heap of (-pitch, end) of sounding notes
    i, n = 0, len(onset)
    while i < n:
        j = i
        while j < n and onset[j] == onset[i]:
            j += 1
        t = onset[i]
        while active and active[0][1] <= t:  # lazily drop ended notes from the heap top
            heapq.heappop(active)
        highest = int(pitch[j - 1])  # notes are sorted by (onset, pitch)
        if not active or highest >= -active[0][0]:
            top.append(highest)
        for k in range(i, j):
            heapq.heappush(active, (-int(pitch[k]), float(end[k])))
        i = j
    return np.asarray(top, dtype=np.int64)


def sounding_profile(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints and the number of notes sounding on each segment between them (sweep line)."""
    times = np.concatenate([starts, ends])
    deltas = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((deltas, times))  # ends before starts at the same time
    times, counts = times[order], np.cumsum(deltas[order])
    return times, counts  # counts[i] holds on [times[i], times[i+1])


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    hist = np.histogram(values, bins=edges)[0].astype(np.float64)
    total = hist.sum()
    return hist / total if total else np.full(len(edges) - 1, np.nan)


# ---------------------------------------------------------------------------------------------
# the features


@feature("pitch_class_histogram", title="Which notes (pitch classes)", kind="histogram", unit="fraction of notes",
         labels=PITCH_NAMES, description="How often each of the 12 pitch classes is played.")  # fmt: skip
def pitch_class_histogram(piece: Piece) -> np.ndarray:
    counts = pitch_class_counts(piece)
    return counts / counts.sum() if counts.sum() else np.full(12, np.nan)


@feature(
    "pitch_range",
    title="Range, lowest to highest note",
    unit="semitones",
    description="Highest minus lowest note.",
)
def pitch_range(piece: Piece) -> float:
    p = piece.pitch[piece.pitched]
    return float(p.max() - p.min()) if len(p) else float("nan")


@feature(
    "pitch_classes_used",
    title="Different notes used (of 12)",
    unit="count",
    description="Distinct pitch classes (of 12) used.",
)
def pitch_classes_used(piece: Piece) -> float:
    p = piece.pitch[piece.pitched]
    return float(len(np.unique(p % 12))) if len(p) else float("nan")


@feature("pitch_class_entropy", title="Variety of notes (entropy)", unit="bits",
         description="Spread of the pitch classes (0 = one pitch class; 3.58 = all 12 equally).")  # fmt: skip
def pitch_class_entropy(piece: Piece) -> float:
    counts = pitch_class_counts(piece)
    if counts.sum() == 0:
        return float("nan")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


@feature("scale_consistency", title="Notes inside one major scale", unit="fraction of notes",
         description="Share of notes inside the best-fitting major (diatonic) scale.")  # fmt: skip
def scale_consistency(piece: Piece) -> float:
    counts = pitch_class_counts(piece)
    if counts.sum() == 0:
        return float("nan")
    return max(float(counts[scale_mask(t, "major")].sum()) for t in range(12)) / counts.sum()


@feature("in_key_rate", title="Notes in the piece's own key", unit="fraction of notes",
         description="Share of notes in the scale of the piece's estimated key.")  # fmt: skip
def in_key_rate(piece: Piece) -> float:
    counts = pitch_class_counts(piece)
    if counts.sum() == 0:
        return float("nan")
    tonic, mode, _ = estimate_key(piece)
    return float(counts[scale_mask(tonic, mode)].sum() / counts.sum())


@feature("polyphony", title="Notes sounding together", unit="notes", time_base="beats",
         description="Average number of notes sounding together (while anything sounds).")  # fmt: skip
def polyphony(piece: Piece) -> float:
    mask = piece.pitched & (piece.duration > 0)
    if not mask.any():
        return float("nan")
    times, counts = sounding_profile(piece.onset[mask], piece.onset[mask] + piece.duration[mask])
    spans = np.diff(times)
    held = counts[:-1] > 0
    total = spans[held].sum()
    return float((spans[held] * counts[:-1][held]).sum() / total) if total > 0 else float("nan")


@feature("note_density", title="Notes per beat", unit="onsets per beat", time_base="beats",
         description="Notes started per beat, over the whole piece.")  # fmt: skip
def note_density(piece: Piece) -> float:
    return float(len(piece.onset) / piece.end) if piece.end > 0 else float("nan")


@feature("notes_per_second", title="Notes per second", unit="onsets per second", time_base="seconds",
         description="Notes started per second at the piece's tempo.")  # fmt: skip
def notes_per_second(piece: Piece) -> float:
    if len(piece.onset) == 0:
        return float("nan")
    end = float((piece.onset_s + piece.duration_s).max())
    return float(len(piece.onset) / end) if end > 0 else float("nan")


@feature("note_duration_histogram", title="Note lengths (beats)", kind="histogram", unit="fraction of notes",
         labels=DURATION_LABELS, time_base="beats",
         description="How long notes are held, in beats (quarter notes).")  # fmt: skip
def note_duration_histogram(piece: Piece) -> np.ndarray:
    return _histogram(piece.duration[piece.pitched], DURATION_EDGES)


@feature("ioi_histogram", title="Gaps between note starts (beats)", kind="histogram", unit="fraction of onsets", labels=DURATION_LABELS,
         time_base="beats", description="Time between successive note starts, in beats.")  # fmt: skip
def ioi_histogram(piece: Piece) -> np.ndarray:
    onsets = np.unique(piece.onset)
    return _histogram(np.diff(onsets), DURATION_EDGES)


@feature("top_voice_interval_histogram", title="Melody steps, semitones (top voice)", kind="histogram", unit="fraction of steps",
         labels=[str(i) for i in range(-INTERVAL_MAX, INTERVAL_MAX + 1)],
         description="Melodic steps of the top voice in semitones (clipped to ±12).")  # fmt: skip
def top_voice_interval_histogram(piece: Piece) -> np.ndarray:
    steps = np.clip(np.diff(top_voice(piece)), -INTERVAL_MAX, INTERVAL_MAX)
    edges = np.arange(-INTERVAL_MAX - 0.5, INTERVAL_MAX + 1.5)
    return _histogram(steps, edges)


@feature("empty_beat_rate", title="Silent beats", unit="fraction of beats", time_base="beats",
         description="Share of beats in which nothing sounds (rests).")  # fmt: skip
def empty_beat_rate(piece: Piece) -> float:
    n_beats = math.ceil(piece.end - 1e-9)
    if n_beats <= 0:
        return float("nan")
    starts, ends = piece.onset, piece.onset + np.maximum(piece.duration, 1e-6)
    # beat b is occupied when some note overlaps [b, b+1): difference array over beat indices
    first = np.floor(starts).astype(np.int64)
    last = np.ceil(ends).astype(np.int64)  # exclusive
    cover = np.zeros(n_beats + 1, dtype=np.int64)
    np.add.at(cover, np.clip(first, 0, n_beats), 1)
    np.add.at(cover, np.clip(last, 0, n_beats), -1)
    occupied = np.cumsum(cover)[:n_beats] > 0
    return float(1.0 - occupied.mean())


@feature("groove_consistency", title="Rhythm repeated bar to bar", unit="similarity (0-1)", time_base="beats",
         description="How alike neighbouring bars' rhythms are (1 = every bar the same).")  # fmt: skip
def groove_consistency(piece: Piece) -> float:
    bars = piece.bars
    if len(bars) < 3 or len(piece.onset) == 0:
        return float("nan")
    steps = np.round(piece.onset * STEPS_PER_BEAT).astype(np.int64)
    bar_steps = np.round(bars * STEPS_PER_BEAT).astype(np.int64)
    bar_of = np.searchsorted(bar_steps, steps, side="right") - 1
    n_bars = len(bars) - 1
    width = int(np.max(np.diff(bar_steps)))
    patterns = np.zeros((n_bars, width), dtype=bool)
    ok = (bar_of >= 0) & (bar_of < n_bars)
    patterns[bar_of[ok], (steps - bar_steps[bar_of])[ok]] = True
    lengths = np.diff(bar_steps)
    hamming = (patterns[1:] != patterns[:-1]).sum(axis=1) / np.maximum(lengths[1:], lengths[:-1])
    return float(1.0 - hamming.mean())


@feature("longest_note", title="Longest note", unit="beats", time_base="beats",
         description="The longest held note, in beats.")  # fmt: skip
def longest_note(piece: Piece) -> float:
    d = piece.duration[piece.pitched]
    return float(d.max()) if len(d) else float("nan")


@feature("programs_used", title="Instruments used", unit="count",
         description="Distinct instruments (MIDI programs; drums count as one).")  # fmt: skip
def programs_used(piece: Piece) -> float:
    return float(len(np.unique(piece.program))) if len(piece.program) else float("nan")
