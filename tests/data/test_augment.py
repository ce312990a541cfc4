"""Seeded augmentations: range-checked transposition, tempo stretch, velocity, instruments, feel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import symusic
from symusic import Note, Tempo, Track

from aurl.data import augment as A
from aurl.data.midi_io import load_score

MIDI = Path(__file__).resolve().parent / "midi"


def _score(*tracks, tpq: int = 480, qpm: float | None = 100) -> symusic.Score:
    score = symusic.Score(tpq)
    if qpm:
        score.tempos.append(Tempo(0, qpm=qpm))
    for notes, program, drum in tracks:
        track = Track(program=program, is_drum=drum)
        track.notes.extend([Note(*n) for n in notes])
        score.tracks.append(track)
    return score


def _pitches(score, i=0):
    return [n.pitch for n in score.tracks[i].notes]


PIANO_DRUMS = (
    ([(0, 480, 30, 80), (480, 480, 100, 80)], 0, False),
    ([(0, 60, 36, 100), (240, 60, 38, 90)], 0, True),
)


def test_transpose_shifts_pitched_notes_only():
    score = _score(*PIANO_DRUMS)
    out = A.transpose(score, 5)
    assert _pitches(out) == [35, 105] and _pitches(out, 1) == [36, 38]
    assert _pitches(score) == [30, 100]
    with pytest.raises(ValueError, match=r"transpose by \+9 moves pitches 30..100 outside 21..108"):
        A.transpose(score, 9, low=21, high=109)


def test_valid_and_random_transpositions_stay_in_range():
    score = _score(*PIANO_DRUMS)
    assert A.valid_transpositions(score, 12, low=21, high=109) == list(range(-9, 9))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        out, shift = A.random_transpose(score, 12, rng, low=21, high=109)
        assert -9 <= shift <= 8 and _pitches(out) == [30 + shift, 100 + shift]
        assert _pitches(out, 1) == [36, 38]
        seen.add(shift)
    assert seen == set(range(-9, 9))
    again = [A.random_transpose(score, 12, np.random.default_rng(7))[1] for _ in range(2)]
    assert again[0] == again[1]
    drums_only = _score(PIANO_DRUMS[1])
    assert A.valid_transpositions(drums_only, 3) == [0]


def test_time_stretch_scales_tempo_not_ticks():
    score, _ = load_score(MIDI / "multitrack_drums.mid")
    out = A.time_stretch(score, 1.25)
    assert [round(t.qpm * 100) for t in out.tempos] == [round(t.qpm * 125) for t in score.tempos]
    assert [n.time for n in out.tracks[0].notes] == [n.time for n in score.tracks[0].notes]
    no_tempo = A.time_stretch(_score(PIANO_DRUMS[0], qpm=None), 0.5)
    assert [round(t.qpm) for t in no_tempo.tempos] == [60]
    _, factor = A.random_time_stretch(score, 0.2, np.random.default_rng(1))
    assert 0.8 <= factor <= 1.2
    with pytest.raises(ValueError, match="factor=0"):
        A.time_stretch(score, 0)


def test_scale_velocity_clips_to_midi_range():
    score = _score(([(0, 10, 60, 10), (0, 10, 62, 100)], 0, False))
    assert [n.velocity for n in A.scale_velocity(score, 1.5, 2).tracks[0].notes] == [17, 127]
    assert [n.velocity for n in A.scale_velocity(score, 0.5, -10).tracks[0].notes] == [1, 40]


def test_substitute_instruments_stays_in_gm_family_and_skips_drums():
    tracks = [([(0, 10, 60, 80)], prog, False) for prog in (0, 25, 33, 81)]
    score = _score(*tracks, ([(0, 10, 36, 80)], 0, True))
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(50):
        out = A.substitute_instruments(score, rng, probability=1.0)
        for new, old in zip(out.tracks[:4], score.tracks[:4], strict=True):
            assert new.program // 8 == old.program // 8 and new.program != old.program
            changed += 1
        assert out.tracks[4].program == 0
    assert changed == 200
    same = A.substitute_instruments(score, rng, probability=0.0)
    assert [t.program for t in same.tracks] == [0, 25, 33, 81, 0]


def test_swing_moves_offbeat_eighths_to_the_triplet():
    notes = [(0, 240, 60, 80), (240, 240, 62, 80), (480, 120, 64, 80), (360, 120, 65, 80)]
    out = A.swing(_score((notes, 0, False)), amount=1.0)
    got = {n.pitch: (n.time, n.duration) for n in out.tracks[0].notes}
    # offbeat 240 -> 320 (2/3 of the beat); 360 (3/4 of it) -> 5/6 of it = 400; 480 stays
    assert got == {60: (0, 320), 62: (320, 160), 64: (480, 160), 65: (400, 80)}
    straight = A.swing(_score((notes, 0, False)), amount=0.0)
    assert sorted((n.time, n.duration) for n in straight.tracks[0].notes) == sorted(
        (t, d) for t, d, _, _ in notes
    )


def test_humanize_is_seeded_and_small():
    score, _ = load_score(MIDI / "pop909_008.mid")
    a = A.humanize(score, np.random.default_rng(5))
    b = A.humanize(score, np.random.default_rng(5))
    c = A.humanize(score, np.random.default_rng(6))
    ta = np.concatenate([t.notes.numpy()["time"] for t in a.tracks]).astype(np.int64)
    tb = np.concatenate([t.notes.numpy()["time"] for t in b.tracks]).astype(np.int64)
    tc = np.concatenate([t.notes.numpy()["time"] for t in c.tracks]).astype(np.int64)
    assert (ta == tb).all() and not (ta == tc).all()
    orig = np.sort(np.concatenate([t.notes.numpy()["time"] for t in score.tracks]).astype(np.int64))
    std = 0.02 * score.ticks_per_quarter
    assert abs(np.sort(ta).mean() - orig.mean()) < std


def test_random_augment_applies_data_config_ranges():
    score, _ = load_score(MIDI / "pop909_008.mid")
    out = A.random_augment(
        score,
        np.random.default_rng(0),
        transpose_range=5,
        velocity_jitter=0.1,
        time_stretch_range=0.2,
    )
    assert out.note_num() == score.note_num()
    ratio = out.tempos[0].qpm / score.tempos[0].qpm
    assert 0.8 <= ratio <= 1.2 and ratio != 1.0
    unchanged = A.random_augment(score, np.random.default_rng(0))
    assert unchanged is not score and unchanged.note_num() == score.note_num()
