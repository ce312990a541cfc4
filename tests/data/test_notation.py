"""partitura reader: ties merged, repeats unfolded, pickup at 0, tempo/time/key, parts as tracks,
music21 fallback; and agreement with the music21 path on a corpus chorale."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from aurl.data import midi_io, notation
from aurl.data.notation import TPQ, read_notation

pytest.importorskip("partitura")

# Two parts, divisions 1 (one tick per quarter), 4/4, two flats, 90 quarters per minute.
# Violin: a one-quarter pickup D4, then E4 C5(half, tied into m2) | C5(half) G4(half) :|
# A backward repeat with no forward repeat goes back to the start, pickup included, so the played
# order is pickup, m1, m2, pickup, m1, m2 (partitura and music21 agree on this).
# Cello: a whole-note C3 in m1 and m2 (no pickup note).
_NOTE = (
    "<note><pitch><step>{s}</step><octave>{o}</octave></pitch><duration>{d}</duration>{tie}"
    "<voice>1</voice><type>{t}</type>{tied}</note>"
)


def _n(step, octave, dur, typ, tie=""):
    ties = "".join(f'<tie type="{x}"/>' for x in tie.split())
    tied = "".join(f'<notations><tied type="{x}"/></notations>' for x in tie.split())
    return _NOTE.format(s=step, o=octave, d=dur, t=typ, tie=ties, tied=tied)


def _rest(dur):
    return f"<note><rest/><duration>{dur}</duration><voice>1</voice></note>"


_ATTR = (
    "<attributes><divisions>1</divisions><key><fifths>-2</fifths><mode>major</mode></key>"
    "<time><beats>4</beats><beat-type>4</beat-type></time></attributes>"
)
_TEMPO = '<direction placement="above"><direction-type><words>Allegro</words></direction-type><sound tempo="90"/></direction>'
_REPEAT = '<barline location="right"><repeat direction="backward"/></barline>'
XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 3.1 Partwise//EN" "http://www.musicxml.org/dtds/partwise.dtd">
<score-partwise version="3.1"><part-list>
<score-part id="P1"><part-name>Melody</part-name><midi-instrument id="P1-I1"><midi-program>41</midi-program></midi-instrument></score-part>
<score-part id="P2"><part-name>Violoncello</part-name></score-part>
</part-list>
<part id="P1">
<measure number="0" implicit="yes">{_ATTR}{_TEMPO}{_n("D", 4, 1, "quarter")}</measure>
<measure number="1">{_n("E", 4, 1, "quarter")}{_n("F", 4, 1, "quarter")}{_n("C", 5, 2, "half", "start")}</measure>
<measure number="2">{_n("C", 5, 2, "half", "stop")}{_n("G", 4, 2, "half")}{_REPEAT}</measure>
</part>
<part id="P2">
<measure number="0" implicit="yes">{_ATTR}{_rest(1)}</measure>
<measure number="1">{_n("C", 3, 4, "whole")}</measure>
<measure number="2">{_n("C", 3, 4, "whole")}{_REPEAT}</measure>
</part></score-partwise>
"""


@pytest.fixture
def tiny_xml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.musicxml"
    path.write_text(XML)
    return path


def _grid(score) -> Counter:
    """(onset, duration, pitch) on a 32nd-note grid (8 steps per quarter), the tokenizer's."""
    step = score.tpq / 8
    return Counter(
        (round(n.time / step), round(n.duration / step), n.pitch)
        for t in score.tracks
        for n in t.notes
    )


def _notes(track):
    return [(n.time // TPQ, n.duration // TPQ, n.pitch) for n in track.notes]


def test_ties_merge_repeats_unfold_and_the_pickup_starts_at_zero(tiny_xml):
    score = read_notation(tiny_xml)
    violin, cello = score.tracks
    assert (violin.name, violin.program, cello.name, cello.program) == (
        "Melody",
        40,  # no instrument in the name: <midi-program>41</midi-program>, which is 1-based
        "Violoncello",
        42,  # from the part's name
    )
    # pickup D4 at 0; m1 E4 F4 C5 (tied half + half = 4 quarters); G4; then all again from 9
    once = [(0, 1, 62), (1, 1, 64), (2, 1, 65), (3, 4, 72), (7, 2, 67)]
    assert _notes(violin) == once + [(t + 9, d, p) for t, d, p in once]
    assert _notes(cello) == [(1, 4, 48), (5, 4, 48), (10, 4, 48), (14, 4, 48)]
    assert {n.velocity for n in violin.notes} == {notation.VELOCITY}
    assert [(t.time, round(t.qpm)) for t in score.tempos] == [(0, 90)]
    assert [(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures] == [(0, 4, 4)]
    assert [(k.time, k.key, k.tonality) for k in score.key_signatures] == [(0, -2, 0)]


def test_load_score_reads_notation_through_partitura_and_falls_back_to_music21(
    tiny_xml, monkeypatch
):
    pytest.importorskip("music21")
    score, _ = midi_io.load_score(tiny_xml)
    assert score.tpq == TPQ and score.note_num() == 14
    calls = []

    def broken(path):
        calls.append(path)
        raise notation.NotationError("partitura cannot parse: stub")

    monkeypatch.setattr(notation, "read_notation", broken)
    fallback, _ = midi_io.load_score(tiny_xml)  # music21 -> MIDI -> symusic
    assert calls and fallback.note_num() == 14  # music21 also merges the tie and unfolds
    assert _grid(fallback) == _grid(score)
    with pytest.raises(midi_io.MidiLoadError, match="partitura cannot parse: stub"):
        midi_io.load_score(tiny_xml, reader="partitura")


def test_unreadable_notation_names_both_readers(tmp_path):
    pytest.importorskip("music21")
    bad = tmp_path / "bad.mxl"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(midi_io.MidiLoadError) as err:
        midi_io.load_score(bad)
    assert str(err.value).startswith(f"{bad}: music21 cannot parse")
    assert "after partitura: partitura cannot parse" in str(err.value)


def test_a_corpus_chorale_has_the_same_notes_through_both_readers():
    music21 = pytest.importorskip("music21")
    path = Path(music21.corpus.getWork("bwv66.6"))

    fast = read_notation(path)
    slow, _ = midi_io.load_score(path, reader="music21")
    assert fast.note_num() == slow.note_num() > 100
    assert _grid(fast) == _grid(slow)
    assert [t.name for t in fast.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]


KERN = "\n".join(
    [
        "**kern",
        "*M2/4",
        "*>[A,A,B]",
        "*>norep[A,B]",
        "*>A",
        "=1",
        "4c",
        "4d",
        "*>B",
        "=2",
        "4e",
        "4f",
        "==",
        "*-",
        "",
    ]
)


def test_kern_expansion_list_is_played_in_its_order(tmp_path):
    flat = notation.expand_kern(KERN)
    assert flat is not None and "*>" not in flat
    path = tmp_path / "rep.krn"
    path.write_text(KERN)
    (track,) = read_notation(path).tracks
    assert [(t, d, p) for t, d, p in _notes(track)] == [
        (0, 1, 60),
        (1, 1, 62),
        (2, 1, 60),  # A again, as the list says
        (3, 1, 62),
        (4, 1, 64),
        (5, 1, 65),
    ]
    assert notation.expand_kern(KERN.replace("*>[A,A,B]\n", "")) is None  # no list: as written
    assert notation.expand_kern(KERN.replace("[A,A,B]", "[A,X]")) is None  # unknown label
