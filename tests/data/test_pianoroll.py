"""Notes <-> piano-roll cells: the grid VAE's input and output (aurl.data.pianoroll)."""

from __future__ import annotations

import numpy as np
import pytest

from aurl.data import pianoroll as R

SPEC = R.RollSpec(bars=2, beats_per_bar=4, steps_per_beat=4, pitch_low=36, pitch_high=84)


def _notes(*rows):
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def test_notes_roll_notes_is_exact_on_the_grid():
    # repeated notes on one pitch stay apart; a chord; a note held to the segment's end
    notes = _notes((0, 4, 60), (4, 8, 60), (0, 8, 48), (0, 8, 55), (8, 32, 64), (31, 32, 50))
    roll = R.to_roll(notes, SPEC)
    assert roll.shape == (32, 48)
    assert (
        roll[0, 60 - 36] == R.ONSET and roll[3, 60 - 36] == R.HOLD and roll[4, 60 - 36] == R.ONSET
    )
    back = R.from_roll(roll, SPEC)
    assert sorted(map(tuple, back.tolist())) == sorted(map(tuple, notes.tolist()))


def test_pitches_outside_the_roll_are_dropped_and_transposition_shifts():
    notes = _notes((0, 4, 30), (0, 4, 60), (4, 8, 90))
    back = R.from_roll(R.to_roll(notes, SPEC), SPEC)
    assert back.tolist() == [[0, 4, 60]]
    up = R.from_roll(R.to_roll(_notes((0, 4, 60)), SPEC, shift=5), SPEC)
    assert up.tolist() == [[0, 4, 65]]
    # the shifts that keep 40..80 inside 36..83 within +-5: -4..3
    assert R.transpose_range(_notes((0, 1, 40), (0, 1, 80)), SPEC, -5, 5) == (-4, 3)


def test_a_hold_without_a_sounding_note_is_dropped():
    roll = np.zeros((SPEC.steps, SPEC.pitches), dtype=np.int64)
    roll[2:5, 10] = R.HOLD  # a decoder's stray holds
    roll[6, 10], roll[7:9, 10] = R.ONSET, R.HOLD
    assert R.from_roll(roll, SPEC).tolist() == [[6, 9, 46]]


def test_windows_start_on_bar_lines_and_cut_held_notes():
    # notes in bars 0, 1 and 3 (bar 2 silent); 2-bar windows every bar
    notes = _notes((0, 40, 60), (20, 22, 62), (50, 54, 64))
    assert R.window_starts(notes, SPEC, 1) == [0, 1, 2]
    segs = R.cut_notes(notes, SPEC, 1)
    assert segs[0].tolist() == [[0, 32, 60], [20, 22, 62]]  # the long note ends at the window
    assert segs[1].tolist() == [[4, 6, 62]]
    assert segs[2].tolist() == [[18, 22, 64]]
    assert R.window_starts(notes, SPEC, 2) == [0, 2]


def test_score_notes_round_to_the_grid_and_keep_a_step():
    from symusic import Note, Score, Track

    s = Score(480)
    t = Track(program=0)
    t.notes.append(Note(0, 10, 60, 80))  # shorter than a 16th: keeps one step
    t.notes.append(Note(480, 960, 62, 80))
    s.tracks.append(t)
    assert R.score_notes(s, 4).tolist() == [[0, 1, 60], [4, 12, 62]]
    assert R.note_f1({(0, 60)}, {(0, 60), (4, 62)}) == pytest.approx(2 / 3)
    assert R.note_f1(set(), set()) == 1.0
