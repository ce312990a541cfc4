"""Score transforms: quantize modes, velocity, pitch, polyphony, track filter/merge, drums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import symusic
from symusic import Note, Tempo, Track

from aurl.data import transforms as T
from aurl.data.midi_io import load_score

MIDI = Path(__file__).resolve().parent / "midi"


def _score(*tracks, tpq: int = 480) -> symusic.Score:
    """tracks: (notes, program, is_drum) with notes as (time, duration, pitch, velocity)."""
    score = symusic.Score(tpq)
    score.tempos.append(Tempo(0, qpm=100))
    for notes, program, drum in tracks:
        track = Track(program=program, is_drum=drum)
        track.notes.extend([Note(*n) for n in notes])
        score.tracks.append(track)
    return score


def _notes(score, i=0):
    return [(n.time, n.duration, n.pitch, n.velocity) for n in score.tracks[i].notes]


# 480 ticks per quarter, 8 steps per beat: straight step 60; triplet (6 per beat) step 80.
OFF = [(7, 110, 60, 80), (158, 50, 62, 80), (322, 20, 64, 80)]


def test_strict_snaps_to_the_straight_grid():
    out = T.quantize(_score((OFF, 0, False)), mode="strict", triplets=False)
    assert _notes(out) == [(0, 120, 60, 80), (180, 60, 62, 80), (300, 60, 64, 80)]


def test_strict_with_triplets_takes_the_nearer_grid_note_by_note():
    out = T.quantize(_score((OFF, 0, False)), mode="strict", triplets=True)
    # onsets 158 -> 160, 322 -> 320 (triplet grid nearer); end 208 -> 180 (straight) would
    # collapse the note, so it lasts one step of its onset's (triplet) grid: 80; end 342 -> 360
    # gives 40 ticks, also shorter than that step: 80 too
    assert _notes(out) == [(0, 120, 60, 80), (160, 80, 62, 80), (320, 80, 64, 80)]


def test_groove_keeps_small_offsets_and_clips_large_ones():
    out = T.quantize(_score((OFF, 0, False)), mode="groove", triplets=False, tolerance=0.25)
    # limit = 0.25 * 60 = 15 ticks: +7 kept; 158 = 180 - 22 -> 165; 322 = 300 + 22 -> 315
    assert [n[0] for n in _notes(out)] == [7, 165, 315]
    same = T.quantize(_score((OFF, 0, False)), mode="groove", triplets=False, tolerance=0.5)
    assert _notes(same) == OFF


def test_adaptive_chooses_one_grid_per_beat():
    triplet_beat = [(0, 100, 60, 80), (162, 100, 62, 80), (318, 100, 64, 80)]  # ~0, 1/3, 2/3
    straight_beat = [(480 + 2, 100, 60, 80), (480 + 118, 100, 62, 80), (480 + 242, 100, 64, 80)]
    out = T.quantize(_score((triplet_beat + straight_beat, 0, False)), mode="adaptive")
    assert [n[0] for n in _notes(out)] == [0, 160, 320, 480, 600, 720]
    plain = T.quantize(_score((triplet_beat, 0, False)), mode="adaptive", triplets=False)
    assert [n[0] for n in _notes(plain)] == [0, 180, 300]


def test_quantize_never_makes_zero_length_notes_and_leaves_input_alone():
    score = _score(([(10, 5, 60, 80)], 0, True))
    out = T.quantize(score, mode="strict", triplets=False)
    assert _notes(out) == [(0, 60, 60, 80)]  # drums are quantized too
    assert _notes(score) == [(10, 5, 60, 80)]


def test_quantize_real_performance_lands_on_grid():
    score, _ = load_score(MIDI / "maestro_1.mid")
    out = T.quantize(score, steps_per_beat=4, mode="strict", triplets=False)
    n = out.tracks[0].notes.numpy()
    step = score.ticks_per_quarter // 4
    assert out.note_num() == score.note_num()
    assert (n["time"] % step == 0).all() and (n["duration"] % step == 0).all()
    assert (n["duration"] >= step).all()


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode='swing'"):
        T.quantize(_score((OFF, 0, False)), mode="swing")
    with pytest.raises(ValueError, match="steps_per_beat=0"):
        T.quantize(_score((OFF, 0, False)), steps_per_beat=0)


def test_normalize_velocity_hits_the_mean_and_keeps_ratios():
    score = _score(([(0, 10, 60, 40), (0, 10, 62, 80)], 0, False))
    out = T.normalize_velocity(score, target_mean=90)
    assert [n[3] for n in _notes(out)] == [60, 120]
    with pytest.raises(ValueError, match="target_mean=200"):
        T.normalize_velocity(score, target_mean=200)


def test_clamp_pitch_folds_by_octaves_or_drops_and_skips_drums():
    notes = [(0, 10, 10, 80), (0, 10, 60, 80), (0, 10, 120, 80), (0, 10, 109, 80)]
    score = _score((notes, 0, False), ([(0, 10, 35, 80)], 0, True))
    fold = T.clamp_pitch(score, 21, 109, mode="fold")
    assert sorted(n[2] for n in _notes(fold)) == [22, 60, 97, 108]  # 10+12, 120-24, 109-12
    assert _notes(fold, 1) == [(0, 10, 35, 80)]
    drop = T.clamp_pitch(score, 40, 109, mode="drop")
    assert [n[2] for n in _notes(drop)] == [60]
    assert _notes(drop, 1) == [(0, 10, 35, 80)]
    with pytest.raises(ValueError, match="at least 12"):
        T.clamp_pitch(score, 60, 65)


def test_reduce_polyphony_keeps_bass_and_melody():
    chord = [(0, 480, p, 80) for p in (48, 55, 60, 64, 72)]
    late = [(240, 240, 67, 80)]  # enters while the chord still sounds
    score = _score((chord + late, 0, False), ([(0, 10, p, 80) for p in (35, 38, 42, 46)], 0, True))
    out = T.reduce_polyphony(score, 3)
    notes = _notes(out)
    assert sorted((t, p) for t, _, p, _ in notes) == [(0, 48), (0, 64), (0, 72), (240, 67)]
    # at 240: 48 (bass) and 72 (melody) stay, 67 (new) takes the third slot, 64 is cut
    assert [d for _, d, p, _ in notes if p == 64] == [240]
    assert len(_notes(out, 1)) == 4  # drums untouched
    top = T.reduce_polyphony(score, 1)
    assert [p for _, _, p, _ in _notes(top)] == [72]


def test_reduce_polyphony_bounds_voices_on_real_music():
    score, _ = load_score(MIDI / "maestro_1.mid")
    out = T.reduce_polyphony(score, 2)
    n = out.tracks[0].notes.numpy()
    on, off = n["time"].astype(np.int64), (n["time"] + n["duration"]).astype(np.int64)
    events = np.concatenate(
        [np.stack([on, np.ones_like(on)], 1), np.stack([off, -np.ones_like(off)], 1)]
    )
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # ends before starts at equal ticks
    assert np.cumsum(events[:, 1]).max() <= 2
    assert out.note_num() > score.note_num() // 2


def test_filter_and_merge_tracks_on_a_multitrack_file():
    score, _ = load_score(MIDI / "multitrack_drums.mid")
    only_bass = T.filter_tracks(score, programs=[33], drop_drums=True)
    assert [(t.program, t.is_drum) for t in only_bass.tracks] == [(33, False)]
    bass_and_drums = T.filter_tracks(score, programs=[33])
    assert [(t.program, t.is_drum) for t in bass_and_drums.tracks] == [(33, False), (0, True)]
    assert (
        len(T.filter_tracks(score, min_notes=200).tracks) == 4
    )  # 202, 204, 1275 and the drums' 618

    by_prog = T.merge_tracks(score)
    assert sorted(t.program for t in by_prog.tracks if not t.is_drum) == [
        18,
        24,
        33,
        41,
        48,
        49,
        56,
    ]
    assert by_prog.note_num() == score.note_num()
    one = T.merge_tracks(score, by_program=False)
    assert [(t.program, t.is_drum) for t in one.tracks] == [(24, False), (0, True)]
    assert one.tracks[0].notes.is_sorted()

    pitched, drums = T.split_drums(score)
    assert pitched.note_num() + drums.note_num() == score.note_num()
    assert [t.is_drum for t in drums.tracks] == [True]


def test_transforms_refuse_scores_not_in_ticks():
    score = _score((OFF, 0, False)).to("quarter")
    for fn in (T.quantize, T.merge_tracks, T.split_drums, T.normalize_velocity):
        with pytest.raises(
            ValueError, match=r"works in tick time, got a symusic.core.Quarter score"
        ):
            fn(score)
