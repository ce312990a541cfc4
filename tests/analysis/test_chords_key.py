"""Chords and key on hand-made progressions with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_scores import cadence, make_score, progression

from aurl.analysis.chords import ROOT_NAMES, label_state, recognize_chords, state_label
from aurl.analysis.key import KeyConfig, estimate_keys, global_key
from aurl.analysis.notes import score_notes


def _labels_per_bar(segments, bars: int, sec_per_bar: float = 2.0) -> list[str]:
    out = []
    for b in range(bars):
        mid = (b + 0.5) * sec_per_bar
        out.append(next(s.label for s in segments if s.start <= mid < s.end))
    return out


@pytest.mark.parametrize("tonic", [0, 2, 7, 10])
def test_cadence_i_iv_v_i_in_several_keys(tonic):
    chords = cadence(tonic) * 2
    segs = recognize_chords(make_score(progression(chords)))
    got = [lab.split("/")[0] for lab in _labels_per_bar(segs, 8)]
    want = [f"{ROOT_NAMES[r]}:{q}" for r, q, _ in chords]
    assert got == want


def test_inversions_get_harte_bass_degrees():
    # C major root position, first inversion (E in the bass), second inversion (G in the bass), V7.
    chords = [(0, "maj", 0), (0, "maj", 4), (0, "maj", 7), (7, "7", 0)] * 2
    segs = recognize_chords(make_score(progression(chords)))
    got = _labels_per_bar(segs, 4)
    assert got == ["C:maj", "C:maj/3", "C:maj/5", "G:7"]


def test_minor_cadence_and_silence_is_no_chord():
    notes = progression(cadence(9, "min") * 2, start=4.0)  # one silent bar first
    segs = recognize_chords(make_score(notes))
    assert segs[0].label == "N" and segs[0].end == pytest.approx(2.0, abs=0.01)
    assert [lab.split("/")[0] for lab in _labels_per_bar(segs, 5)[1:]] == [
        "A:min",
        "D:min",
        "E:maj",
        "A:min",
    ]


def test_label_state_maps_extended_labels_to_the_vocabulary():
    assert state_label(label_state("Bb:min7")) == "Bb:min7"
    assert state_label(label_state("F:maj6")) == "F:maj"
    assert state_label(label_state("G:sus4(b7)")) == "G:sus4"
    assert state_label(label_state("N")) == "N"


@pytest.mark.parametrize(
    ("tonic", "mode", "label"),
    [(0, "maj", "C:maj"), (7, "maj", "G:maj"), (9, "min", "A:min"), (2, "min", "D:min")],
)
def test_global_key_of_a_cadential_piece(tonic, mode, label):
    score = make_score(progression(cadence(tonic, mode) * 4))
    assert global_key(estimate_keys(score)) == label


def test_modulating_piece_gets_two_key_segments():
    # 16 bars of C major cadences, then 16 bars of E major: the key changes at 32 s.
    notes = progression(cadence(0) * 4) + progression(cadence(4) * 4, start=64.0)
    keys = estimate_keys(make_score(notes))
    assert [k.label for k in keys] == ["C:maj", "E:maj"]
    assert keys[1].start == pytest.approx(32.0, abs=4.0)


def test_key_config_rejects_unknown_profiles():
    with pytest.raises(ValueError, match="profiles"):
        KeyConfig(profiles="nope")


def test_every_profile_set_finds_the_key_of_a_plain_cadence():
    score = make_score(progression(cadence(5) * 4))
    notes = score_notes(score)
    for name in ("krumhansl", "temperley", "albrecht", "pop909"):
        keys = estimate_keys(
            notes=notes,
            beats=np.arange(0, 32, 0.5),
            cfg=KeyConfig(method="profiles", profiles=name),
        )
        assert global_key(keys) == "F:maj", name


def test_key_config_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        KeyConfig(method="guess")


def test_key_network_is_transposition_equivariant():
    """Moving every pitch up k semitones moves every beat's key scores up k tonics, exactly."""
    from aurl.analysis.chords import bar_positions, beat_features, segment_bounds
    from aurl.analysis.key_network import default_model

    model = default_model()
    notes = score_notes(make_score(progression(cadence(9, "min") * 2 + cadence(0) * 2)))
    bounds = segment_bounds(np.arange(0, 32, 0.5), notes.end)
    feats, extra = beat_features(notes, bounds)
    pos = bar_positions(bounds[:-1], np.arange(0, 32, 2.0))
    lp = model.log_probs(feats, extra, pos)
    for k in (1, 5):
        moved = np.roll(feats.reshape(-1, 3, 12), k, axis=2).reshape(len(feats), 36)
        lp_k = model.log_probs(moved, extra, pos)
        want = np.concatenate([np.roll(lp[:, :12], k, axis=1), np.roll(lp[:, 12:], k, axis=1)], 1)
        np.testing.assert_allclose(lp_k, want, atol=1e-4)


def test_key_network_round_trips_through_its_files(tmp_path):
    import json

    from aurl.analysis.key_network import KeyNetwork, default_model

    model = default_model()
    model.to_files(tmp_path / "k", note="test")
    back = KeyNetwork.from_bytes(
        json.loads((tmp_path / "k.json").read_text()), (tmp_path / "k.safetensors").read_bytes()
    )
    assert (back.window_beats, back.change_penalty) == (model.window_beats, model.change_penalty)
    rng = np.random.default_rng(0)
    feats, extra = rng.random((40, 36)), rng.random((40, 3))
    pos = np.arange(40) % 4
    np.testing.assert_allclose(
        back.log_probs(feats, extra, pos), model.log_probs(feats, extra, pos), atol=1e-6
    )
