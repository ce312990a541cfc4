"""Note names: key tonics by convention, chord roots as degrees of the key around them."""

from __future__ import annotations

import pytest
from analysis_scores import make_score, progression

from aurl.analysis.key import key_label
from aurl.analysis.run import analyze_score
from aurl.analysis.spelling import pitch_class, spell, spell_chord

KEYS = [key_label(k) for k in range(24)]


def test_key_tonics_take_their_key_signatures_spelling():
    assert KEYS[:12] == [
        f"{t}:maj" for t in ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
    ]
    assert KEYS[12:] == [
        f"{t}:min" for t in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
    ]


@pytest.mark.parametrize(
    ("pc", "key", "name"),
    [
        (8, "E:maj", "G#"),  # iii of E major, not Ab
        (1, "E:maj", "C#"),  # vi
        (7, "E:maj", "G"),  # borrowed bIII
        (10, "C:maj", "Bb"),  # bVII
        (8, "C:maj", "Ab"),  # bVI
        (6, "C:maj", "F#"),  # vii/V
        (6, "B:min", "F#"),  # V of B minor, not Gb
        (5, "F#:min", "E#"),  # the leading tone keeps its letter
        (4, "Eb:maj", "E"),  # Neapolitan: E on a lead sheet, not Fb
        (7, "G#:min", "G"),  # F## would be a double sharp
        (10, "A:min", "Bb"),  # Neapolitan of A minor
        (3, "Eb:min", "Eb"),
    ],
)
def test_roots_are_spelled_as_scale_degrees(pc, key, name):
    assert spell(pc, key) == name


def test_spelling_never_changes_a_pitch_class():
    for key in KEYS:
        for pc in range(12):
            name = spell(pc, key)
            assert pitch_class(name) == pc, (key, pc, name)
            assert len(name) <= 2 and name[1:] in ("", "#", "b"), (key, pc, name)


@pytest.mark.parametrize("bad", ["", "H", "C$", "#C", "c##x"])
def test_pitch_class_rejects_what_is_not_a_note_name(bad):
    with pytest.raises(ValueError, match="note name"):
        pitch_class(bad)


def test_pitch_class_reads_any_spelling():
    names = {"B#": 0, "Cb": 11, "Fb": 4, "E#": 5, "Ebb": 2, "F##": 7, "gb": 6}
    assert {n: pitch_class(n) for n in names} == names


def test_spell_chord_keeps_quality_and_bass_interval():
    assert spell_chord("Ab:min/b3", "E:maj") == "G#:min/b3"
    assert spell_chord("Gb:7", "B:min") == "F#:7"
    assert spell_chord("N", "E:maj") == "N"
    assert spell_chord("Db:maj", None) == "Db:maj"


def test_analyze_spells_chords_in_a_sharp_key():
    # I - vi - IV - V in E major, four times: the vi is C#:min and the V is B:maj.
    chords = [(4, "maj", 0), (1, "min", 0), (9, "maj", 0), (11, "maj", 0)] * 4
    res = analyze_score(make_score(progression(chords)))
    assert res["global_key"] == "E:maj"
    roots = {c["label"].split(":")[0] for c in res["chords"] if c["label"] != "N"}
    assert "C#" in roots and "Db" not in roots
    assert roots <= {"E", "C#", "A", "B", "F#", "G#", "D#"}
