"""Every feature against values computed by hand on small hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import symusic

from aurl.evaluation import features as F
from aurl.evaluation.features import compute_features, piece_from_score

TPQ = 480


def make_score(tracks, *, sigs=((0, 4, 4),), tempos=((0, 120.0),)):
    """tracks: [(program, is_drum, [(onset_beats, duration_beats, pitch), ...])]."""
    score = symusic.Score(TPQ)
    for beat, num, den in sigs:
        score.time_signatures.append(symusic.TimeSignature(int(beat * TPQ), num, den))
    for beat, qpm in tempos:
        score.tempos.append(symusic.Tempo(int(beat * TPQ), qpm))
    for program, drum, notes in tracks:
        track = symusic.Track("t", program=program, is_drum=drum)
        for onset, dur, pitch in notes:
            track.notes.append(symusic.Note(round(onset * TPQ), round(dur * TPQ), pitch, 80))
        score.tracks.append(track)
    return score


C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


@pytest.fixture
def scale():
    """C major scale up an octave, quarter notes, 4/4 at 120 bpm: 8 notes over 2 bars."""
    return piece_from_score(make_score([(0, False, [(i, 1, p) for i, p in enumerate(C_MAJOR)])]))


@pytest.fixture
def mixed():
    """3/4, tempo 120 -> 60 at beat 3, piano + violin + drums, with rests.

    piano: C-E-G triad at beat 0 for 2 beats; D4 at beat 3 for 3 beats
    violin (program 40): G3 at beat 8.5 for 0.5 beat; drums: F# (42) at beat 6 for 0.25 beat.
    """
    return piece_from_score(
        make_score(
            [
                (0, False, [(0, 2, 60), (0, 2, 64), (0, 2, 67), (3, 3, 62)]),
                (40, False, [(8.5, 0.5, 55)]),
                (0, True, [(6, 0.25, 42)]),
            ],
            sigs=((0, 3, 4),),
            tempos=((0, 120.0), (3, 60.0)),
        )
    )


def test_scale_features_match_hand_values(scale):
    f = compute_features(scale)
    expected_pch = np.array([2, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1]) / 8
    np.testing.assert_allclose(f["pitch_class_histogram"], expected_pch)
    assert f["pitch_range"] == 12
    assert f["pitch_classes_used"] == 7
    assert f["pitch_class_entropy"] == pytest.approx(
        0.5 + 6 * 0.375
    )  # -(2/8 log 2/8 + 6/8 log 1/8)
    assert f["scale_consistency"] == 1.0
    assert f["in_key_rate"] == 1.0
    assert f["polyphony"] == 1.0
    assert f["note_density"] == 1.0  # 8 onsets / 8 beats
    assert f["notes_per_second"] == pytest.approx(2.0)  # 8 onsets / 4 s at 120 bpm
    np.testing.assert_allclose(f["note_duration_histogram"], [0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(f["ioi_histogram"], [0, 0, 0, 1, 0, 0, 0, 0])
    tv = np.zeros(25)
    tv[12 + 2], tv[12 + 1] = 5 / 7, 2 / 7  # steps 2 2 1 2 2 2 1
    np.testing.assert_allclose(f["top_voice_interval_histogram"], tv)
    assert f["empty_beat_rate"] == 0.0
    assert f["groove_consistency"] == 1.0
    assert f["longest_note"] == 1.0
    assert f["programs_used"] == 1.0


def test_mixed_piece_in_three_four_with_tempo_change_and_drums(mixed):
    f = compute_features(mixed)
    # drums (pitch 42 = F#) are in no pitch feature: pitches 60 64 67 62 55
    np.testing.assert_allclose(
        f["pitch_class_histogram"], np.bincount([0, 4, 7, 2, 7], minlength=12) / 5
    )
    assert f["pitch_range"] == 12
    assert f["pitch_classes_used"] == 4
    # pitched sound: 3 notes for 2 beats, 1 for 3 beats, 1 for 0.5 beat
    assert f["polyphony"] == pytest.approx((3 * 2 + 3 + 0.5) / 5.5)
    # onsets: 3 + 1 + 1 + drum = 6, over 9 beats; 1.5 s (3 beats at 120) + 6 s (6 beats at 60)
    assert f["note_density"] == pytest.approx(6 / 9)
    assert f["notes_per_second"] == pytest.approx(6 / 7.5)
    # pitched durations 2 2 2 3 0.5 -> bins [1.5, 3) x3, [3, 6) x1, [0.375, 0.75) x1
    np.testing.assert_allclose(f["note_duration_histogram"], [0, 0, 0.2, 0, 0.6, 0.2, 0, 0])
    # distinct onsets 0 3 6 8.5 (the drum counts): IOIs 3 3 2.5
    np.testing.assert_allclose(f["ioi_histogram"], [0, 0, 0, 0, 1 / 3, 2 / 3, 0, 0])
    # top voice 67 (triad top), 62, 55: steps -5 -7
    tv = np.zeros(25)
    tv[12 - 5] = tv[12 - 7] = 0.5
    np.testing.assert_allclose(f["top_voice_interval_histogram"], tv)
    # beats 0..8 (end 9): sounding in 0 1 3 4 5 6 (drum) 8 -> beats 2 and 7 empty
    assert f["empty_beat_rate"] == pytest.approx(2 / 9)
    # 3/4 bars [0,3) [3,6) [6,9) on a 24-step grid: {0} {0} {0, 20}: hamming 0 and 1/24
    assert f["groove_consistency"] == pytest.approx(1 - (0 + 1 / 24) / 2)
    assert f["longest_note"] == 3.0
    assert f["programs_used"] == 3.0  # piano, violin, drums


def test_bar_lines_follow_six_eight_and_meter_changes():
    np.testing.assert_allclose(F.bar_lines([(0.0, 6, 8)], 7.0), [0, 3, 6, 9])
    np.testing.assert_allclose(F.bar_lines([(0.0, 4, 4), (8.0, 3, 4)], 12.0), [0, 4, 8, 11, 14])
    np.testing.assert_allclose(F.bar_lines([], 8.0), [0, 4, 8])  # no time signature: 4/4


def test_groove_in_six_eight_uses_dotted_half_bars():
    # onsets every dotted quarter (1.5 beats) for 4 bars of 6/8: every bar {0, 12} on 24 steps
    notes = [(1.5 * i, 1.5, 60) for i in range(8)]
    p = piece_from_score(make_score([(0, False, notes)], sigs=((0, 6, 8),)))
    np.testing.assert_allclose(p.bars, [0, 3, 6, 9, 12])
    assert F.groove_consistency(p) == 1.0
    # the same notes read as 4/4 bars of 4 beats fall differently in each bar
    q = piece_from_score(make_score([(0, False, notes)]))
    assert F.groove_consistency(q) < 1.0


def test_empty_beats_count_rests_not_missing_onsets():
    # one whole note: MusPy's onset rule calls 3 of its 4 beats empty; nothing is silent here
    held = piece_from_score(make_score([(0, False, [(0, 4, 60)])]))
    assert F.empty_beat_rate(held) == 0.0
    gap = piece_from_score(make_score([(0, False, [(0, 1, 60), (3, 1, 60)])]))
    assert F.empty_beat_rate(gap) == 0.5


@pytest.mark.parametrize(
    ("pitches", "tonic", "mode"),
    [
        (C_MAJOR, 0, "major"),
        ([64, 66, 68, 69, 71, 73, 75, 76, 64, 71], 4, "major"),  # E major, tonic and fifth doubled
        ([57, 59, 60, 62, 64, 65, 68, 69, 57, 64, 57], 9, "minor"),  # A harmonic minor
    ],
)
def test_key_estimate(pitches, tonic, mode):
    p = piece_from_score(make_score([(0, False, [(i, 1, x) for i, x in enumerate(pitches)])]))
    assert F.estimate_key(p)[:2] == (tonic, mode)


def test_in_key_rate_uses_the_estimated_key_not_c_major():
    e_major = [64, 66, 68, 69, 71, 73, 75, 76]
    p = piece_from_score(make_score([(0, False, [(i, 1, x) for i, x in enumerate(e_major)])]))
    assert F.in_key_rate(p) == 1.0
    c_major_rate = np.isin(np.array(e_major) % 12, [0, 2, 4, 5, 7, 9, 11]).mean()
    assert c_major_rate == 0.5  # what a fixed-C-major convention would report


def test_minor_key_counts_the_leading_tone_and_scale_consistency_does_not():
    # A minor with G# (leading tone) twice: in key for in_key_rate, outside every diatonic set
    notes = [57, 59, 60, 62, 64, 65, 67, 68, 69, 68, 69, 64, 57]
    p = piece_from_score(make_score([(0, False, [(i, 1, x) for i, x in enumerate(notes)])]))
    assert F.estimate_key(p)[:2] == (9, "minor")
    assert F.in_key_rate(p) == 1.0
    assert F.scale_consistency(p) == pytest.approx(11 / 13)


def test_chromatic_note_lowers_scale_consistency_by_count():
    notes = [*C_MAJOR, 66]  # + F#: one of 9 notes outside the best diatonic set
    p = piece_from_score(make_score([(0, False, [(i, 1, x) for i, x in enumerate(notes)])]))
    assert F.scale_consistency(p) == pytest.approx(8 / 9)
    assert F.pitch_class_entropy(p) == pytest.approx(
        -(2 / 9 * math.log2(2 / 9) + 7 / 9 * math.log2(1 / 9))
    )


def test_top_voice_ignores_inner_voices_under_a_held_soprano():
    # soprano G5 held 4 beats; alto moves C5 D5 E5 F5 underneath; then soprano A5
    notes = [(0, 4, 79), (0, 1, 72), (1, 1, 74), (2, 1, 76), (3, 1, 77), (4, 1, 81)]
    p = piece_from_score(make_score([(0, False, notes)]))
    np.testing.assert_array_equal(F.top_voice(p), [79, 81])


def test_drums_only_piece_has_undefined_pitch_features():
    p = piece_from_score(make_score([(0, True, [(i, 0.25, 36) for i in range(8)])]))
    f = compute_features(p)
    for name in ("pitch_range", "pitch_class_entropy", "in_key_rate", "polyphony", "longest_note"):
        assert math.isnan(f[name]), name
    assert np.isnan(f["pitch_class_histogram"]).all()
    assert f["programs_used"] == 1.0
    assert f["note_density"] == pytest.approx(8 / 7.25)
    np.testing.assert_allclose(f["ioi_histogram"], [0, 0, 0, 1, 0, 0, 0, 0])


def test_longest_note_ignores_drum_lengths():
    p = piece_from_score(make_score([(0, False, [(0, 2, 60)]), (0, True, [(0, 16, 36)])]))
    assert F.longest_note(p) == 2.0


def test_seconds_score_gives_the_same_beats():
    score = make_score([(0, False, [(i, 1, p) for i, p in enumerate(C_MAJOR)])])
    a, b = piece_from_score(score), piece_from_score(score.to("second"))
    np.testing.assert_allclose(a.onset, b.onset, atol=1e-3)
    np.testing.assert_allclose(a.onset_s, [0.5 * i for i in range(8)])


def test_registry_rejects_duplicates_and_accepts_new_features():
    with pytest.raises(ValueError, match="already registered"):
        F.register(F.FeatureSpec("pitch_range", F.pitch_range, "scalar", "semitones", "x"))
    with pytest.raises(ValueError, match="kind"):
        F.FeatureSpec("x", F.pitch_range, "vector", "u", "x")

    @F.feature("test_note_count", unit="count", description="notes")
    def _count(piece):
        return float(len(piece.onset))

    try:
        p = piece_from_score(make_score([(0, False, [(0, 1, 60), (1, 1, 62)])]))
        assert compute_features(p)["test_note_count"] == 2.0
    finally:
        del F.FEATURES["test_note_count"]
