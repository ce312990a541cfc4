"""Pure fixes of a loaded score: ``repair_score(score) -> (score, RepairReport)``.

symusic parses leniently (FACTS.md: it loads 153 of 600 mutated POP909 files, some with a
2**28-tick delta), so a score that parsed can still carry values no musician wrote. Each fix here
is counted under a stable name in :class:`RepairReport` so `aurl prepare` can say what it changed:

===========================  ====================================================================
``zero_length_notes``        duration <= 0 -> one 32nd note (``tpq // 8`` ticks, at least 1)
``overlapping_notes``        a same-pitch note sounding into the next one is cut at its onset
``duplicate_notes``          same pitch, same onset, same track: only the longest is kept
``bad_pitch``                pitch outside 0..127 (only possible on a hand-built score): dropped
``bad_velocity``             velocity outside 1..127: clamped into range
``absurd_tempos``            tempo outside 10..400 quarters per minute (or mspq <= 0): dropped
``bad_time_signatures``      numerator 0 or a denominator that is not a power of two: dropped
``bad_key_signatures``       key outside -7..7 sharps or tonality not 0/1: dropped
``notes_beyond_gap``         notes after a silent gap of more than ``max_gap_beats``: dropped
``leading_silence_removed``  the piece starts more than ``max_gap_beats`` late: moved back
``long_notes_capped``        notes longer than ``max_note_beats``: shortened to that
``empty_tracks``             tracks with no notes left: removed
===========================  ====================================================================

Everything works on symusic's numpy views (one array per field), never a Python loop over notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import symusic
from symusic import Note, Tempo

MIN_QPM = 10.0
"""Slowest credible tempo; below this a MIDI file is almost certainly corrupt (issue 2)."""
MAX_QPM = 400.0
"""Fastest credible tempo in quarters per minute (issue 2)."""
MAX_GAP_BEATS = 1024
"""A silence longer than this (1024 quarters = 256 bars of 4/4, ~8.5 min at 120 BPM) means a
corrupt delta time pushed the notes after it; FACTS.md shows mutated files with 2**28-tick deltas."""
MAX_NOTE_BEATS = 256
"""Longest credible note (64 bars of 4/4). Real files do hold long pads: a string pad in
real_midi/MIDIs_multitrack/d6caebd1….mid lasts 112 quarters; FACTS.md: some music21 Beethoven
exports hold notes for hundreds of quarters — conversion artefacts, not music."""


@dataclass
class RepairReport:
    """What a load fixed: ``counts`` maps a fix name (see the module table) to how many times."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int = 1) -> None:
        """Count ``n`` more fixes of kind ``what`` (zero counts are not recorded)."""
        if n:
            self.counts[what] = self.counts.get(what, 0) + int(n)

    def merge(self, other: RepairReport) -> None:
        for what, n in other.counts.items():
            self.add(what, n)

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def __str__(self) -> str:
        if not self:
            return "no repairs"
        return "repaired " + ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items()))


def repair_score(
    score: symusic.Score,
    *,
    max_gap_beats: float = MAX_GAP_BEATS,
    max_note_beats: float = MAX_NOTE_BEATS,
) -> tuple[symusic.Score, RepairReport]:
    """Return a repaired copy of ``score`` (tick time) and what was fixed; the input is untouched."""
    if max_gap_beats <= 0 or max_note_beats <= 0:
        raise ValueError(
            f"max_gap_beats={max_gap_beats} and max_note_beats={max_note_beats} must be > 0"
        )
    if not isinstance(score, symusic.core.ScoreTick):
        raise ValueError(
            f"repair_score works in tick time, got a {score.ttype} score; use score.to('tick')"
        )
    report = RepairReport()
    out = score.copy()
    tpq = max(int(out.ticks_per_quarter), 1)

    for track in out.tracks:
        track.notes = _fix_notes(track.notes.numpy(), tpq, max_note_beats, report)

    _drop_after_gap(out, int(max_gap_beats * tpq), report)

    kept = [t for t in out.tracks if t.note_num() > 0]
    report.add("empty_tracks", len(out.tracks) - len(kept))
    if len(kept) != len(out.tracks):
        out.tracks = kept

    _fix_meta(out, report)
    return out, report


def _fix_notes(
    n: dict[str, np.ndarray], tpq: int, max_note_beats: float, report: RepairReport
) -> symusic.core.NoteTickList:
    """Fix one track's notes given as symusic's structure-of-arrays dict."""
    time = n["time"].astype(np.int64)
    dur = n["duration"].astype(np.int64)
    pitch = n["pitch"].astype(np.int64)
    vel = n["velocity"].astype(np.int64)

    ok = (pitch >= 0) & (pitch <= 127) & (time >= 0)
    report.add("bad_pitch", int((~ok).sum()))
    time, dur, pitch, vel = time[ok], dur[ok], pitch[ok], vel[ok]

    bad_vel = (vel < 1) | (vel > 127)
    report.add("bad_velocity", int(bad_vel.sum()))
    vel = np.clip(vel, 1, 127)

    short = dur <= 0
    report.add("zero_length_notes", int(short.sum()))
    dur = np.where(short, max(tpq // 8, 1), dur)

    cap = int(max_note_beats * tpq)
    long_ = dur > cap
    report.add("long_notes_capped", int(long_.sum()))
    dur = np.minimum(dur, cap)

    # Exact duplicates (same pitch and onset): sort by (pitch, onset, longest first), keep the first.
    order = np.lexsort((-dur, time, pitch))
    time, dur, pitch, vel = time[order], dur[order], pitch[order], vel[order]
    duplicate = np.zeros(len(time), dtype=bool)
    duplicate[1:] = (pitch[1:] == pitch[:-1]) & (time[1:] == time[:-1])
    report.add("duplicate_notes", int(duplicate.sum()))
    keep = ~duplicate
    time, dur, pitch, vel = time[keep], dur[keep], pitch[keep], vel[keep]

    # Same-pitch overlaps: a note still sounding at the next onset of its pitch is cut there
    # (a MIDI note-on on a sounding pitch ends the first note on most synths anyway).
    overlap = np.zeros(len(time), dtype=bool)
    overlap[:-1] = (pitch[:-1] == pitch[1:]) & (time[:-1] + dur[:-1] > time[1:])
    report.add("overlapping_notes", int(overlap.sum()))
    cut_to = np.empty_like(time)
    cut_to[:-1] = time[1:] - time[:-1]
    dur = np.where(overlap, cut_to, dur)

    order = np.lexsort((pitch, time))
    return Note.from_numpy(
        time[order].astype(np.int32),
        dur[order].astype(np.int32),
        pitch[order].astype(np.int8),
        vel[order].astype(np.int8),
    )


def _drop_after_gap(score: symusic.Score, max_gap: int, report: RepairReport) -> None:
    """Keep only the largest run of notes between silences longer than ``max_gap`` (in place).

    A corrupt delta near the end pushes a few stray notes late (they are dropped); one near the
    start pushes nearly everything late (or a whole track: then the leading silence is the only
    symptom). When the kept run starts more than ``max_gap`` after time 0 it is moved back to
    start within a bar of 0 — a shift by whole 4/4 bars keeps its grid — carrying along the
    tempo, meter and key in force there.
    """
    if score.note_num() == 0:
        return
    time = np.concatenate([t.notes.numpy()["time"] for t in score.tracks]).astype(np.int64)
    end = time + np.concatenate([t.notes.numpy()["duration"] for t in score.tracks])
    order = np.argsort(time, kind="stable")
    time, end = time[order], np.maximum.accumulate(end[order])
    # gap before note i+1 = its onset - the latest end among notes starting at or before note i,
    # so a long held note bridges what would otherwise look like a gap
    big = np.flatnonzero(time[1:] - end[:-1] > max_gap)
    bounds = np.concatenate(([0], big + 1, [len(time)]))
    k = int(np.argmax(np.diff(bounds)))
    lo, hi = int(time[bounds[k]]), int(time[bounds[k + 1] - 1])
    # other events (controls, pedal releases, tempo) may trail the last note a little
    hi_end = int(end[bounds[k + 1] - 1]) + max_gap
    late_start = lo > max_gap
    if len(big) == 0 and not late_start:
        return

    dropped = 0
    for track in score.tracks:
        n = track.notes.numpy()
        keep = (n["time"] >= lo) & (n["time"] <= hi)
        dropped += int((~keep).sum())
        if not keep.all():
            track.notes = Note.from_numpy(
                *(n[f][keep] for f in ("time", "duration", "pitch", "velocity"))
            )
        first = lo if late_start else 0
        for name in ("controls", "pedals", "pitch_bends", "lyrics"):
            events = getattr(track, name)
            if len(events):
                events.filter(lambda e, lo=first, hi=hi_end: lo <= e.time <= hi, inplace=True)
    report.add("notes_beyond_gap", dropped)

    bar = 4 * max(int(score.ticks_per_quarter), 1)
    shift = (lo // bar) * bar if late_start else 0
    for name in ("tempos", "time_signatures", "key_signatures", "markers"):
        events = getattr(score, name)
        if not len(events):
            continue
        if late_start:
            before = [e for e in events if e.time <= lo]
            kept = [e for e in events if lo < e.time <= hi_end]
            if before and name != "markers":
                in_force = before[-1].copy()
                in_force.time = shift  # becomes time 0 after the shift below
                kept.insert(0, in_force)
        else:
            kept = [e for e in events if e.time <= hi_end]
        events.clear()
        events.extend(kept)
    if shift:
        report.add("leading_silence_removed")
        score.shift_time(-shift, inplace=True)


def _fix_meta(score: symusic.Score, report: RepairReport) -> None:
    """Drop absurd tempo, time-signature and key-signature events (in place)."""
    if len(score.tempos):
        t = score.tempos.numpy()
        mspq = t["mspq"].astype(np.int64)
        with np.errstate(divide="ignore"):
            qpm = np.where(mspq > 0, 60e6 / np.maximum(mspq, 1), 0.0)
        ok = (qpm >= MIN_QPM) & (qpm <= MAX_QPM)
        if not ok.all():
            report.add("absurd_tempos", int((~ok).sum()))
            score.tempos = Tempo.from_numpy(t["time"][ok], t["mspq"][ok])
    if len(score.time_signatures):
        before = len(score.time_signatures)
        score.time_signatures.filter(
            lambda ts: (
                ts.numerator > 0
                and ts.denominator > 0
                and ts.denominator & (ts.denominator - 1) == 0
            ),
            inplace=True,
        )
        report.add("bad_time_signatures", before - len(score.time_signatures))
    if len(score.key_signatures):
        before = len(score.key_signatures)
        score.key_signatures.filter(
            lambda ks: -7 <= ks.key <= 7 and ks.tonality in (0, 1), inplace=True
        )
        report.add("bad_key_signatures", before - len(score.key_signatures))
