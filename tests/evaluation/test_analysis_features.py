"""Analysis-based evaluation features (issue 11 item 8) on hand-made pieces with known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from analysis_scores import cadence, make_score, progression

from aurl.evaluation import analysis_features as af
from aurl.evaluation.features import FEATURES, piece_from_score


def test_features_are_registered():
    for name in ("key_stability", "chord_vocabulary", "chord_fifth_motion", "repeated_bars"):
        assert name in FEATURES


def test_a_repeated_cadence():
    # I-IV-V-I in C four times: one key, three chords, 2 of 3 root moves by 4th/5th, and every bar
    # after the first cadence repeats an earlier one (bars 4..16 of 2..16).
    piece = piece_from_score(make_score(progression(cadence(0) * 4)))
    assert af.key_stability(piece) == 1.0
    assert af.chord_vocabulary(piece) == 3.0
    assert af.chord_fifth_motion(piece) == pytest.approx(2 / 3)
    assert af.repeated_bars(piece) == pytest.approx(13 / 15)


def test_a_modulating_piece_is_less_key_stable():
    notes = progression(cadence(0) * 4) + progression(cadence(4) * 4, start=64.0)
    piece = piece_from_score(make_score(notes))
    assert af.key_stability(piece) == pytest.approx(0.5, abs=0.15)
    assert af.chord_vocabulary(piece) == 6.0


def test_empty_piece_gives_nan():
    piece = piece_from_score(make_score([]))
    assert af.key_stability(piece) != af.key_stability(piece)  # NaN
