"""Pure ``Score -> Score`` transforms in symusic's tick time; the input score is never modified.

Notes are handled as numpy arrays (``track.notes.numpy()`` / ``Note.from_numpy``), one per field,
so a transform over a 10k-note score stays in C loops. Drum tracks (``is_drum``) hold sounds, not
pitches: pitch transforms (``clamp_pitch``, ``reduce_polyphony``) leave them alone, timing
transforms (``quantize``) apply to them like any track.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import symusic
from symusic import Note, Track

from aurl.config import QUANTIZE_MODES

__all__ = [
    "clamp_pitch",
    "filter_tracks",
    "merge_tracks",
    "normalize_velocity",
    "note_arrays",
    "quantize",
    "reduce_polyphony",
    "require_ticks",
    "set_notes",
    "split_drums",
]

_FIELDS = ("time", "duration", "pitch", "velocity")


def require_ticks(score: symusic.Score, where: str) -> None:
    """Raise ``ValueError`` unless ``score`` is in tick time (what ``load_score`` returns)."""
    if not isinstance(score, symusic.core.ScoreTick):
        raise ValueError(
            f"{where} works in tick time, got a {score.ttype} score; use score.to('tick')"
        )


def note_arrays(track: symusic.core.TrackTick) -> dict[str, np.ndarray]:
    """A track's notes as int64 arrays keyed ``time, duration, pitch, velocity``."""
    n = track.notes.numpy()
    return {f: n[f].astype(np.int64) for f in _FIELDS}


def set_notes(track: symusic.core.TrackTick, n: dict[str, np.ndarray]) -> None:
    """Replace a track's notes (in place) by arrays, in symusic's own order (time, duration,
    pitch, velocity) so ``notes.is_sorted()`` holds."""
    order = np.lexsort((n["velocity"], n["pitch"], n["duration"], n["time"]))
    track.notes = Note.from_numpy(
        n["time"][order].astype(np.int32),
        n["duration"][order].astype(np.int32),
        n["pitch"][order].astype(np.int8),
        n["velocity"][order].astype(np.int8),
    )


# ---------------------------------------------------------------------------------------------
# quantization


def _triplet_steps(steps_per_beat: int) -> int:
    """Triplet subdivision paired with a straight one: three in the time of two of the next
    coarser straight value (8 steps = 32nds -> 6 per beat = 16th triplets; 4 -> 3 = 8th triplets)."""
    return max(3, steps_per_beat * 3 // 4)


def quantize(
    score: symusic.Score,
    steps_per_beat: int = 8,
    mode: str = "strict",
    triplets: bool = True,
    tolerance: float = 0.25,
) -> symusic.Score:
    """Snap note onsets and ends to a grid of ``steps_per_beat`` per quarter note.

    - ``strict``: every onset and end lands on the grid (straight only, or with ``triplets`` the
      nearer of the straight and triplet grids, note by note).
    - ``groove``: snap as strict, then put back each note's micro-timing offset clipped to
      ``± tolerance`` grid steps: small human deviations (the groove) survive, sloppy ones are
      pulled within ``tolerance`` of the grid. ``tolerance >= 0.5`` changes nothing.
    - ``adaptive``: per beat (one quarter), choose the straight or the triplet grid — whichever
      gives the smaller total onset error over all tracks, straight on ties — and snap strictly
      to it, so a beat never mixes both feels. Without ``triplets`` it equals ``strict``.

    A note never ends up shorter than one grid step (groove: one tick).
    """
    require_ticks(score, "quantize")
    if mode not in QUANTIZE_MODES:
        raise ValueError(
            f"quantize mode={mode!r} is not allowed; choose one of {', '.join(QUANTIZE_MODES)}"
        )
    if steps_per_beat < 1:
        raise ValueError(f"steps_per_beat={steps_per_beat} must be >= 1")
    if not tolerance >= 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0 (grid steps)")
    out = score.copy()
    tpq = float(out.ticks_per_quarter)
    straight = tpq / steps_per_beat
    trip = tpq / _triplet_steps(steps_per_beat)
    tracks = [note_arrays(t) for t in out.tracks]
    if not any(len(n["time"]) for n in tracks):
        return out

    use_trip_beat = None
    if mode == "adaptive" and triplets:
        onsets = np.concatenate([n["time"] for n in tracks]).astype(np.float64)
        beat = (onsets // tpq).astype(np.int64)
        err_s = np.abs(onsets - _snap(onsets, straight))
        err_t = np.abs(onsets - _snap(onsets, trip))
        n_beats = int(beat.max()) + 2
        tot_s = np.bincount(beat, err_s, minlength=n_beats)
        tot_t = np.bincount(beat, err_t, minlength=n_beats)
        use_trip_beat = tot_t < tot_s

    for track, n in zip(out.tracks, tracks, strict=True):
        if len(n["time"]) == 0:
            continue
        on = n["time"].astype(np.float64)
        end = on + n["duration"]
        if use_trip_beat is not None:
            q_on, step = _snap_adaptive(on, straight, trip, use_trip_beat, tpq)
            q_end, _ = _snap_adaptive(end, straight, trip, use_trip_beat, tpq)
        elif triplets and mode != "adaptive":
            (q_on, step), (q_end, _) = (
                _snap_nearest(on, straight, trip),
                _snap_nearest(end, straight, trip),
            )
        else:
            q_on, q_end, step = (
                _snap(on, straight),
                _snap(end, straight),
                np.full_like(on, straight),
            )
        min_len = step  # a note collapsed by snapping lasts one step of its onset's grid
        if mode == "groove":
            limit = tolerance * straight
            q_on = q_on + np.clip(on - q_on, -limit, limit)
            q_end = q_end + np.clip(end - q_end, -limit, limit)
            min_len = np.ones_like(q_on)
        q_on = np.maximum(np.rint(q_on), 0)
        q_end = np.maximum(np.rint(q_end), q_on + np.rint(min_len))
        n["time"], n["duration"] = q_on.astype(np.int64), (q_end - q_on).astype(np.int64)
        set_notes(track, n)
    return out


def _snap(t: np.ndarray, step: float) -> np.ndarray:
    return np.rint(t / step) * step


def _snap_nearest(t: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Snap to the nearer of grids ``a`` and ``b`` (``a`` on ties); also return the step used."""
    qa, qb = _snap(t, a), _snap(t, b)
    use_b = np.abs(t - qb) < np.abs(t - qa)
    return np.where(use_b, qb, qa), np.where(use_b, b, a)


def _snap_adaptive(
    t: np.ndarray, straight: float, trip: float, use_trip_beat: np.ndarray, tpq: float
) -> tuple[np.ndarray, np.ndarray]:
    """Snap each time to its beat's chosen grid; also return the step used."""
    beat = np.minimum((t // tpq).astype(np.int64), len(use_trip_beat) - 1)
    use = use_trip_beat[beat]
    return np.where(use, _snap(t, trip), _snap(t, straight)), np.where(use, trip, straight)


# ---------------------------------------------------------------------------------------------
# velocity, pitch, polyphony


def normalize_velocity(
    score: symusic.Score, target_mean: float = 80.0, low: int = 1, high: int = 127
) -> symusic.Score:
    """Scale all velocities by one factor so their mean is ``target_mean`` (before clipping to
    ``low..high``). One multiplicative factor keeps relative dynamics: a note twice as loud as
    another stays so unless clipped. 80 is mezzo-forte in MIDI practice."""
    require_ticks(score, "normalize_velocity")
    if not 1 <= low <= high <= 127:
        raise ValueError(
            f"velocity bounds low={low}, high={high} must satisfy 1 <= low <= high <= 127"
        )
    if not low <= target_mean <= high:
        raise ValueError(f"target_mean={target_mean} must lie in [{low}, {high}]")
    out = score.copy()
    arrays = [note_arrays(t) for t in out.tracks]
    vel = np.concatenate([n["velocity"] for n in arrays]) if arrays else np.zeros(0)
    if len(vel) == 0:
        return out
    factor = target_mean / max(float(vel.mean()), 1.0)
    for track, n in zip(out.tracks, arrays, strict=True):
        n["velocity"] = np.clip(np.rint(n["velocity"] * factor), low, high).astype(np.int64)
        set_notes(track, n)
    return out


def clamp_pitch(
    score: symusic.Score, low: int = 21, high: int = 109, mode: str = "fold"
) -> symusic.Score:
    """Bring pitched notes into ``low <= pitch < high`` (the tokenizer's ``pitch_range``).

    ``fold`` moves an out-of-range note by whole octaves to the nearest in-range octave (keeps its
    pitch class and rhythm; needs a range of at least 12); ``drop`` removes it. Folding can land a
    note on one already sounding: run ``repair.repair_score`` after if that matters. Drums untouched.
    """
    require_ticks(score, "clamp_pitch")
    if mode not in ("fold", "drop"):
        raise ValueError(f"clamp_pitch mode={mode!r} is not allowed; choose fold or drop")
    if not 0 <= low < high <= 128:
        raise ValueError(f"pitch range low={low}, high={high} must satisfy 0 <= low < high <= 128")
    if mode == "fold" and high - low < 12:
        raise ValueError(
            f"fold needs a range of at least 12 semitones, got {high - low}; use mode='drop'"
        )
    out = score.copy()
    for track in out.tracks:
        if track.is_drum:
            continue
        n = note_arrays(track)
        p = n["pitch"]
        if mode == "drop":
            keep = (p >= low) & (p < high)
            n = {f: v[keep] for f, v in n.items()}
        else:
            up = -((p - low) // 12)  # octaves needed to reach low (positive when below)
            down = -(
                (p - (high - 1) + 11) // 12
            )  # octaves needed to reach high-1 (negative when above)
            n["pitch"] = p + 12 * np.where(p < low, up, np.where(p >= high, down, 0))
        set_notes(track, n)
    return out


def reduce_polyphony(score: symusic.Score, max_voices: int) -> symusic.Score:
    """At most ``max_voices`` notes sound at once in each pitched track.

    At each onset, the lowest (bass) and highest (melody) of the notes sounding then are kept
    first; other slots go to notes starting at that onset, highest first, then to held notes.
    A held note that loses its slot is cut at the onset; a new one that gets no slot is dropped.
    ``max_voices=1`` keeps the top line. Drum tracks are untouched.
    """
    require_ticks(score, "reduce_polyphony")
    if max_voices < 1:
        raise ValueError(f"max_voices={max_voices} must be >= 1")
    out = score.copy()
    for track in out.tracks:
        if track.is_drum or track.note_num() <= max_voices:
            continue
        n = note_arrays(track)
        order = np.lexsort((n["pitch"], n["time"]))
        n = {f: v[order] for f, v in n.items()}
        time, end, pitch = n["time"], n["time"] + n["duration"], n["pitch"]
        keep = np.ones(len(time), dtype=bool)
        active: list[int] = []  # indices of kept notes still sounding
        # Python loop over onset groups only (a few thousand per track at most).
        starts = np.flatnonzero(np.r_[True, time[1:] != time[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(time)], strict=True):
            t = time[s]
            active = [i for i in active if end[i] > t]
            new = list(range(s, e))
            cand = active + new
            if len(cand) <= max_voices:
                active = cand
                continue
            by_pitch = sorted(cand, key=lambda i: pitch[i])
            chosen = [by_pitch[-1]] + ([by_pitch[0]] if max_voices > 1 else [])
            rest = sorted(new, key=lambda i: -pitch[i]) + sorted(active, key=lambda i: -pitch[i])
            for i in rest:
                if len(chosen) >= max_voices:
                    break
                if i not in chosen:
                    chosen.append(i)
            for i in cand:
                if i in chosen:
                    continue
                if i >= s:
                    keep[i] = False
                else:
                    end[i] = t
            active = chosen
        n["duration"] = end - time
        set_notes(track, {f: v[keep] for f, v in n.items()})
    return out


# ---------------------------------------------------------------------------------------------
# tracks


def split_drums(score: symusic.Score) -> tuple[symusic.Score, symusic.Score]:
    """(pitched tracks only, drum tracks only), each with the score's tempo/meter/key events."""
    require_ticks(score, "split_drums")
    pitched, drums = score.copy(), score.copy()
    pitched.tracks = [t for t in pitched.tracks if not t.is_drum]
    drums.tracks = [t for t in drums.tracks if t.is_drum]
    return pitched, drums


def filter_tracks(
    score: symusic.Score,
    programs: Iterable[int] | None = None,
    drop_drums: bool = False,
    min_notes: int = 1,
) -> symusic.Score:
    """Keep tracks with at least ``min_notes`` notes; pitched tracks only if their program is in
    ``programs`` (None = any); drum tracks unless ``drop_drums`` (their program is a kit, so the
    ``programs`` filter does not apply to them)."""
    require_ticks(score, "filter_tracks")
    wanted = None if programs is None else {int(p) for p in programs}
    if wanted is not None and not all(0 <= p <= 127 for p in wanted):
        raise ValueError(f"programs={sorted(wanted)} must be General MIDI numbers 0..127")
    out = score.copy()
    out.tracks = [
        t
        for t in out.tracks
        if t.note_num() >= min_notes
        and (not t.is_drum or not drop_drums)
        and (t.is_drum or wanted is None or t.program in wanted)
    ]
    return out


def merge_tracks(score: symusic.Score, by_program: bool = True) -> symusic.Score:
    """Merge pitched tracks: one per program (``by_program``) or all into one track carrying the
    program of the track with most notes. Drum tracks merge into one drum track of their own.
    Notes, controls, pedals and pitch bends are concatenated; the order of first appearance is kept."""
    require_ticks(score, "merge_tracks")
    out = score.copy()
    groups: dict[tuple, list] = {}
    for t in out.tracks:
        key = ("drum",) if t.is_drum else (("prog", t.program) if by_program else ("pitched",))
        groups.setdefault(key, []).append(t)
    merged = []
    for key, tracks in groups.items():
        if len(tracks) == 1:
            merged.append(tracks[0])
            continue
        main = max(tracks, key=lambda t: t.note_num())
        names = [t.name for t in tracks if t.name]
        m = Track(
            name=" + ".join(dict.fromkeys(names)), program=main.program, is_drum=key == ("drum",)
        )
        for t in tracks:
            m.notes.extend(t.notes)
            m.controls.extend(t.controls)
            m.pedals.extend(t.pedals)
            m.pitch_bends.extend(t.pitch_bends)
        set_notes(m, note_arrays(m))
        for events in (m.controls, m.pedals, m.pitch_bends):
            events.sort()
        merged.append(m)
    out.tracks = merged
    return out
