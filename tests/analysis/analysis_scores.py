"""Hand-made scores with known answers for the analysis tests."""

from __future__ import annotations

import symusic

TPQ = 480

# Triads as semitones above the root, for building progressions.
TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10)}


def make_score(
    notes: list[tuple[float, float, int, int]], qpm: float = 120.0, ts: tuple[int, int] = (4, 4)
) -> symusic.Score:
    """A one-track score from (start beat, duration beats, pitch, velocity)."""
    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, qpm))
    score.time_signatures.append(symusic.TimeSignature(0, ts[0], ts[1]))
    track = symusic.Track()
    for start, dur, pitch, vel in notes:
        track.notes.append(symusic.Note(round(start * TPQ), max(1, round(dur * TPQ)), pitch, vel))
    track.notes.sort()
    score.tracks.append(track)
    return score


def progression(
    chords: list[tuple[int, str, int]],
    beats_per_chord: int = 4,
    start: float = 0.0,
    arpeggio: int = 72,
) -> list:
    """Block chords, a bass note and an arpeggio from ``arpeggio`` up: (root pc, quality, bass interval)."""
    notes = []
    t = start
    for root, quality, bass in chords:
        tones = TRIADS[quality]
        notes.append((t, beats_per_chord, 36 + (root + bass) % 12, 90))  # bass
        for iv in tones:  # sustained block chord in the middle register
            notes.append((t, beats_per_chord, 60 + (root + iv) % 12, 70))
        for k in range(beats_per_chord):  # one chord tone per beat an octave up
            notes.append((t + k, 1, arpeggio + (root + tones[k % len(tones)]) % 12, 60))
        t += beats_per_chord
    return notes


def cadence(tonic: int, mode: str = "maj") -> list[tuple[int, str, int]]:
    """I-IV-V-I (or i-iv-V-i)."""
    q = "maj" if mode == "maj" else "min"
    return [(tonic, q, 0), ((tonic + 5) % 12, q, 0), ((tonic + 7) % 12, "maj", 0), (tonic, q, 0)]
