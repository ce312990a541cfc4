"""Note names as a musician writes them: key tonics by convention, chord roots by scale degree.

The analyzers work in pitch classes; only their labels need letters. A key's tonic takes the
spelling of its usual key signature (F# minor, not Gb minor; Eb major, not D# major). A chord's root
is named by its scale degree in the key around it, so in E major the mediant is ``G#:min`` and the
borrowed flat-III is ``G:maj``, and in C major the flat-VII is ``Bb:maj``. Harte labels and
``mir_eval`` accept any spelling, so the scores do not change.

music21 spells pitches too, but from a stream of notes; this is a 12-entry table per mode, kept
here because the labels are made for every chord of every file (a music21 round trip per label
would cost more than the chord recognition).
"""

from __future__ import annotations

LETTERS = "CDEFGAB"
NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

# Conventional tonic names, pitch class 0..11 (the spelling with the smaller key signature; Gb/F#
# major and Eb/D# minor, both six accidentals, take F# and Eb as most scores do).
MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")

# Letter steps above the tonic for each chromatic degree (semitones above the tonic): b2, 2, b3,
# 3, 4, #4, 5, b6, 6, b7, 7 in major; in minor the same letters (b2 Neapolitan, #4 of vii/V,
# natural 6 and 7 of melodic minor), so a root is always spelled as a degree of the scale.
_DEGREE_STEPS = (0, 1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 6)
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")


def pitch_class(name: str) -> int:
    """``"F#"`` / ``"Gb"`` / ``"B#"`` / ``"Ebb"`` -> 0..11; ValueError for anything else."""
    if not name or name[0].upper() not in NATURAL or set(name[1:]) - {"#", "b"}:
        raise ValueError(f"{name!r} is not a note name like C, F# or Bb")
    return (NATURAL[name[0].upper()] + name.count("#") - name[1:].count("b")) % 12


def tonic_name(pc: int, minor: bool) -> str:
    return (MINOR_TONICS if minor else MAJOR_TONICS)[pc % 12]


def spell(pc: int, key: str) -> str:
    """Pitch class ``pc`` named as a scale degree of ``key`` (a key label like ``"E:maj"``).

    A degree that would need a double sharp or flat (the #4 of C# minor), or Cb, Fb, E# or B# for
    anything but the leading tone (the Neapolitan of Eb major is written E, not Fb, on a lead
    sheet), takes the plain name on the key signature's side: sharps in sharp keys, flats otherwise.
    """
    tonic = key.partition(":")[0]
    degree = (pc - pitch_class(tonic)) % 12
    letter = LETTERS[(LETTERS.index(tonic[0].upper()) + _DEGREE_STEPS[degree]) % 7]
    shift = (pc - NATURAL[letter] + 6) % 12 - 6  # -6..5 semitones from the natural letter
    name = letter + ("#" if shift == 1 else "b" if shift == -1 else "")
    if abs(shift) <= 1 and (name not in ("Cb", "Fb", "E#", "B#") or degree == 11):
        return name
    t, minor = key_parts(key)
    fifths = (7 * ((t + 3) % 12 if minor else t) + 5) % 12 - 5  # signature: -5 flats..+6 sharps
    return (SHARP_NAMES if fifths > 0 else FLAT_NAMES)[pc % 12]


def key_parts(label: str) -> tuple[int, bool]:
    """``"F#:min"`` -> (6, True)."""
    tonic, _, mode = label.partition(":")
    return pitch_class(tonic), mode.startswith("min")


def spell_chord(label: str, key: str | None) -> str:
    """The Harte label ``label`` with its root spelled in ``key`` (a key label; the bass of an
    inversion is an interval, ``/3``, and needs no spelling).

    ``N``, ``X`` and labels without a key around them are returned unchanged.
    """
    if key is None or label in ("N", "X") or ":" not in label:
        return label
    root, rest = label.split(":", 1)
    return f"{spell(pitch_class(root), key)}:{rest}"
