"""Melody, sections and motifs on hand-made pieces with planted answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from analysis_scores import make_score, progression

from aurl.analysis.beats import track_beats
from aurl.analysis.chords import recognize_chords
from aurl.analysis.melody import extract_melody, melody_notes, skyline
from aurl.analysis.motifs import MotifConfig, find_motifs
from aurl.analysis.notes import score_notes
from aurl.analysis.structure import find_sections

# A 4-bar tune (start beat, duration, pitch), repeated to build A A B A.
TUNE_A = [
    (0, 1, 72),
    (1, 1, 74),
    (2, 1, 76),
    (3, 1, 72),
    (4, 2, 77),
    (6, 2, 76),
    (8, 1, 74),
    (9, 1, 72),
    (10, 1, 71),
    (11, 1, 74),
    (12, 3, 72),
]
TUNE_B = [
    (0, 2, 79),
    (2, 1, 77),
    (3, 1, 76),
    (4, 2, 74),
    (6, 2, 77),
    (8, 1, 76),
    (9, 1, 74),
    (10, 2, 72),
    (12, 3, 71),
]
CHORDS_A = [(0, "maj", 0), (5, "maj", 0), (7, "maj", 0), (0, "maj", 0)]
CHORDS_B = [(9, "min", 0), (2, "min", 0), (5, "maj", 0), (7, "maj", 0)]


def aaba() -> tuple[list, list]:
    notes, melody = [], []
    for k, (tune, chords) in enumerate(
        [(TUNE_A, CHORDS_A), (TUNE_A, CHORDS_A), (TUNE_B, CHORDS_B), (TUNE_A, CHORDS_A)]
    ):
        start = 16 * k
        melody += [(start + s, d, p, 100) for s, d, p in tune]
        notes += progression(chords, start=start, arpeggio=48)
    return notes, melody


def test_melody_over_accompaniment_beats_the_skyline():
    acc, melody = aaba()
    # The accompaniment also plays soft short high notes above the tune: the skyline takes them.
    rng = np.random.default_rng(0)
    sparkle = [(b + 0.5, 0.25, 88 + int(rng.integers(0, 4)), 45) for b in range(0, 64, 2)]
    score = make_score(acc + melody + sparkle)
    notes = score_notes(score)
    truth = {(round(s * 0.5, 3), p) for s, _, p, _ in melody}

    def f1(idx):
        got = {(round(float(notes.onset[i]), 3), int(notes.pitch[i])) for i in idx}
        hit = len(got & truth)
        return 2 * hit / (len(got) + len(truth))

    ours, sky = f1(extract_melody(notes=notes)), f1(skyline(notes))
    assert ours >= 0.8  # measured 0.87 with the shipped model; the skyline 0.61
    assert ours > sky + 0.2


def test_melody_line_is_monophonic():
    acc, melody = aaba()
    notes = score_notes(make_score(acc + melody))
    line = melody_notes(notes, extract_melody(notes=notes))
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(line))


def test_sections_of_an_aaba_song():
    acc, melody = aaba()
    score = make_score(acc + melody)
    notes = score_notes(score)
    bt = track_beats(score, notes)
    chords = recognize_chords(notes=notes, beats=bt.beats, downbeats=bt.downbeats)
    line = melody_notes(notes, extract_melody(notes=notes))
    sections = find_sections(line, chords, bt.beats, bt.downbeats, notes.end)
    assert [round(s.start, 3) for s in sections] == [0.0, 8.0, 16.0, 24.0]
    labels = [s.label for s in sections]
    assert labels[0] == labels[1] == labels[3] != labels[2]


def test_planted_motif_is_found_at_every_transposition():
    rng = np.random.default_rng(1)
    motif = [(0, 0.5), (2, 0.5), (4, 0.5), (-1, 1.0), (0, 2.0)]  # (pitch offset, duration in beats)
    onsets, pitches, planted = [], [], []
    t = 0.0
    for base in (60, 65, 67, 62):
        for _ in range(6):  # random filler between occurrences
            onsets.append(t)
            pitches.append(int(rng.integers(55, 80)))
            t += float(rng.choice([0.25, 0.75, 1.5]))
        planted.append(t)
        for off, d in motif:
            onsets.append(t)
            pitches.append(base + off)
            t += d
    on = np.array(onsets) * 0.5
    motifs = find_motifs(
        on, np.r_[on[1:], on[-1] + 1.0], np.array(pitches), MotifConfig(min_notes=4)
    )
    assert motifs, "no motif found"
    best = motifs[0]
    assert best.pattern[:3] == [2, 2, -5]
    starts = [round(o.start, 3) for o in best.occurrences]
    assert starts == [round(p * 0.5, 3) for p in planted]


def test_motif_config_is_validated():
    with pytest.raises(ValueError, match="min_notes"):
        MotifConfig(min_notes=1)
