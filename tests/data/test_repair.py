"""repair_score: each fix does what the module table says and is counted."""

from __future__ import annotations

import pytest
import symusic
from symusic import KeySignature, Note, Tempo, TimeSignature, Track

from aurl.data.repair import RepairReport, repair_score


def _score(notes, tpq: int = 480, drum: bool = False) -> symusic.Score:
    score = symusic.Score(tpq)
    track = Track(program=0, is_drum=drum)
    track.notes.extend([Note(*n) for n in notes])
    score.tracks.append(track)
    return score


def _notes(score: symusic.Score, i: int = 0) -> list[tuple[int, int, int, int]]:
    return [(n.time, n.duration, n.pitch, n.velocity) for n in score.tracks[i].notes]


def test_clean_score_is_unchanged_and_report_is_false():
    score = _score([(0, 480, 60, 80), (480, 480, 62, 80)])
    out, report = repair_score(score)
    assert not report and report.counts == {} and str(report) == "no repairs"
    assert _notes(out) == _notes(score)


def test_zero_length_becomes_a_32nd_and_velocity_is_clamped():
    out, report = repair_score(_score([(0, 0, 60, 0), (100, -5, 61, 80)]))
    assert _notes(out) == [(0, 60, 60, 1), (100, 60, 61, 80)]
    assert report.counts == {"zero_length_notes": 2, "bad_velocity": 1}


def test_overlap_is_cut_and_duplicates_keep_the_longest():
    score = _score([(0, 300, 60, 80), (0, 1000, 60, 70), (200, 100, 60, 90), (0, 480, 64, 80)])
    out, report = repair_score(score)
    # the longer duplicate (1000 ticks) survives, then is cut at the next onset of pitch 60 (200)
    assert _notes(out) == [(0, 200, 60, 70), (0, 480, 64, 80), (200, 100, 60, 90)]
    assert report.counts == {"duplicate_notes": 1, "overlapping_notes": 1}


def test_input_score_is_not_modified():
    score = _score([(0, 0, 60, 80)])
    repair_score(score)
    assert _notes(score) == [(0, 0, 60, 80)]


def test_absurd_tempos_and_meta_are_dropped():
    score = _score([(0, 480, 60, 80)])
    score.tempos.extend(
        [Tempo(0, qpm=120), Tempo(100, qpm=5), Tempo(200, qpm=500), Tempo(300, mspq=0)]
    )
    score.time_signatures.extend(
        [TimeSignature(0, 4, 4), TimeSignature(10, 3, 5), TimeSignature(20, 0, 4)]
    )
    score.key_signatures.extend([KeySignature(0, 2, 0), KeySignature(10, 9, 0)])
    out, report = repair_score(score)
    assert [round(t.qpm) for t in out.tempos] == [120]
    assert [(t.numerator, t.denominator) for t in out.time_signatures] == [(4, 4)]
    assert [k.key for k in out.key_signatures] == [2]
    assert report.counts == {"absurd_tempos": 3, "bad_time_signatures": 2, "bad_key_signatures": 1}


def test_stray_notes_after_a_huge_delta_are_dropped():
    notes = [(i * 480, 480, 60 + i, 80) for i in range(8)] + [(2**28, 480, 70, 80)]
    out, report = repair_score(_score(notes))
    assert out.note_num() == 8 and out.end() == 8 * 480
    assert report.counts == {"notes_beyond_gap": 1}


def test_huge_delta_near_the_start_keeps_the_bulk_and_moves_it_back():
    tpq = 480
    late = 2**28 + 100  # not a bar multiple: the shift keeps the offset within the bar
    notes = [(0, 480, 50, 80)] + [(late + i * 480, 480, 60 + i, 80) for i in range(6)]
    score = _score(notes)
    score.tempos.extend([Tempo(0, qpm=90), Tempo(late + 480, qpm=100)])
    out, report = repair_score(score)
    shift = (late // (4 * tpq)) * 4 * tpq
    assert [n[0] for n in _notes(out)] == [late - shift + i * 480 for i in range(6)]
    assert [(t.time, round(t.qpm)) for t in out.tempos] == [(0, 90), (late - shift + 480, 100)]
    assert report.counts == {"notes_beyond_gap": 1, "leading_silence_removed": 1}


def test_long_held_note_bridges_a_gap():
    notes = [(0, 2000 * 480, 40, 80), (1500 * 480, 480, 60, 80)]
    out, report = repair_score(_score(notes), max_note_beats=4000)
    assert out.note_num() == 2 and not report


def test_overlong_notes_are_capped_and_empty_tracks_removed():
    score = _score([(0, 300 * 480, 60, 80)])
    score.tracks.append(Track(program=5))
    out, report = repair_score(score)
    assert _notes(out) == [(0, 256 * 480, 60, 80)]
    assert len(out.tracks) == 1
    assert report.counts == {"long_notes_capped": 1, "empty_tracks": 1}


def test_report_merge_and_bad_arguments():
    a, b = RepairReport({"x": 1}), RepairReport()
    b.add("x", 2)
    b.add("y", 0)
    a.merge(b)
    assert a.counts == {"x": 3}
    with pytest.raises(ValueError, match="max_gap_beats=0"):
        repair_score(_score([(0, 1, 60, 80)]), max_gap_beats=0)


def test_repair_refuses_scores_not_in_ticks():
    with pytest.raises(ValueError, match="repair_score works in tick time"):
        repair_score(_score([(0, 480, 60, 80)]).to("second"))
