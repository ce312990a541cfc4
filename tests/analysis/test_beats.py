"""Beats and bars: tempo-map phase, wrong time signatures, and note-based tracking."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
from analysis_scores import cadence, make_score, progression

from aurl.analysis.beats import (
    N_EVIDENCE,
    beat_evidence,
    phase_evidence,
    phase_weights,
    track_beats,
)
from aurl.analysis.notes import score_notes


def test_wrong_time_signature_is_ignored_bars_come_from_the_music():
    # 4/4 music (a new chord and a bass note every 4 beats) in a file that says 3/4.
    score = make_score(progression(cadence(0) * 4), ts=(3, 4))
    bt = track_beats(score)
    assert bt.source == "tempo_map"
    assert bt.beats_per_bar == 4
    np.testing.assert_allclose(bt.downbeats[:8], np.arange(8) * 2.0, atol=1e-6)


def test_downbeat_phase_after_a_pickup():
    # One pickup beat, then bars of 4 starting at beat 1 (0.5 s).
    notes = [(0.0, 1.0, 67, 80), *progression(cadence(7) * 3, start=1.0)]
    bt = track_beats(make_score(notes, ts=(1, 4)))
    assert bt.beats_per_bar == 4
    assert bt.downbeats[0] == pytest.approx(0.5, abs=1e-6)


def test_tempo_map_phase_follows_notes_that_sit_off_the_tick_grid():
    # Every note 40 ticks (1/12 beat) late, as in POP909: beats must move with them.
    score = make_score([(s + 1 / 12, d, p, v) for s, d, p, v in progression(cadence(2) * 2)])
    bt = track_beats(score)
    assert bt.source == "tempo_map"
    assert bt.beats[1] - 0.5 == pytest.approx(0.5 / 12, abs=0.01)


def test_performance_without_a_usable_tempo_map_is_tracked_from_the_notes():
    # Played at 100 BPM with timing jitter, stored under a 120 BPM map with no relation to it.
    rng = np.random.default_rng(0)
    notes = []
    for beat in range(96):
        t = beat * 0.6 + rng.normal(0, 0.01)
        notes.append((t, 0.3, 48 if beat % 4 == 0 else 64 + beat % 3, 100 if beat % 4 == 0 else 70))
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track()
    for t, d, p, v in notes:  # seconds -> ticks at 120 BPM (1 s = 960 ticks)
        track.notes.append(symusic.Note(round(t * 960) + 7, round(d * 960), p, v))
    score.tracks.append(track)
    bt = track_beats(score)
    assert bt.source == "notes"
    assert bt.period == pytest.approx(0.6, abs=0.03)
    assert bt.beats_per_bar == 4


def test_empty_score_has_no_beats():
    bt = track_beats(make_score([]))
    assert len(bt.beats) == 0 and len(bt.downbeats) == 0


def test_melody_decides_the_bar_phase_when_chords_change_every_half_bar():
    # Two beats of accompaniment before the tune; chords change every 2 beats throughout, so
    # harmony alone cannot tell bar lines from half bars. The tune sings on each bar line (beat 2,
    # 6, 10, ...) and on the bar's last beat, never on its third: bars start at beat 2.
    chords = [(0, "maj", 0), (9, "min", 0), (5, "maj", 0), (7, "maj", 0)] * 5
    acc = progression(chords, beats_per_chord=2)
    tune = []
    for bar in range(9):
        b = 2 + 4 * bar
        tune += [(b, 3, 76, 100), (b + 3, 1, 74, 100)]
    score = make_score(acc + tune, ts=(1, 4))
    bt = track_beats(score)
    assert bt.beats_per_bar == 4
    assert bt.downbeats[0] == pytest.approx(1.0, abs=1e-6)  # beat 2 at 120 BPM


def test_beat_evidence_columns_and_phase_weights():
    notes = score_notes(make_score(progression(cadence(0) * 2)))
    beats = np.arange(32) * 0.5
    ev = beat_evidence(notes, beats)
    assert ev.shape == (32, N_EVIDENCE)
    np.testing.assert_allclose(ev.mean(axis=0), 0.0, atol=1e-9)  # z-scored per column
    # Without a melody its two columns carry nothing.
    np.testing.assert_allclose(ev[:, 9:], 0.0, atol=1e-9)
    assert phase_weights().shape == (N_EVIDENCE,)
    # Chords and bass notes every 4 beats from beat 0: phase 0 gets the most evidence.
    assert int(np.argmax(phase_evidence(ev, 4) @ phase_weights())) == 0
