"""MIDI I/O: lenient load with reasons, atomic save, notation formats, folder scan."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import symusic
from symusic import Note, Tempo, Track

from aurl.data.midi_io import (
    MidiLoadError,
    find_music_files,
    load_score,
    load_score_bytes,
    save_score,
)

MIDI = Path(__file__).resolve().parent / "midi"


def _reason(path_or_bytes, name: str = "x.mid") -> str:
    with pytest.raises(MidiLoadError) as info:
        if isinstance(path_or_bytes, bytes):
            load_score_bytes(path_or_bytes, name)
        else:
            load_score(path_or_bytes)
    err = info.value
    assert str(err) == f"{err.path}: {err.reason}"
    return str(err)


def test_real_files_load_with_tracks_programs_and_drums():
    score, report = load_score(MIDI / "multitrack_drums.mid")
    assert score.ticks_per_quarter == 192
    assert len(score.tracks) == 9
    assert [t.program for t in score.tracks if not t.is_drum] == [33, 56, 18, 49, 41, 48, 41, 24]
    assert [t.note_num() for t in score.tracks if t.is_drum] == [618]
    assert round(score.tempos[0].qpm) == 106
    assert not report, str(report)

    score, _ = load_score(MIDI / "maestro_1.mid")
    assert score.note_num() == 2367
    assert len(score.tracks[0].pedals) > 0


def test_empty_and_corrupt_files_fail_with_a_reason_naming_the_path():
    assert _reason(MIDI / "empty.mid") == f"{MIDI / 'empty.mid'}: no notes"
    msg = _reason(MIDI / "corrupt_control168.mid")
    assert msg.startswith(f"{MIDI / 'corrupt_control168.mid'}: corrupt:")
    assert msg.endswith("control value 168 is outside MIDI's 0..127 (Get control_value=168)")


def test_byte_level_failures_have_specific_reasons(tmp_path):
    good = (MIDI / "pop909_008.mid").read_bytes()
    assert _reason(b"") == "x.mid: empty file (0 bytes)"
    assert _reason(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "x.mid: not a MIDI file (header b'RIFF')"
    assert _reason(good[:10]).startswith("x.mid: truncated:")
    assert _reason(good[: len(good) // 2]).startswith("x.mid: truncated:")
    with pytest.raises(MidiLoadError, match=r"big\.mid: too large \(\d+ bytes > 100"):
        load_score_bytes(good, "big.mid", max_bytes=100)
    zero = tmp_path / "zero.mid"
    zero.write_bytes(b"")
    assert _reason(zero) == f"{zero}: empty file (0 bytes)"
    assert _reason(tmp_path / "missing.mid").startswith(f"{tmp_path / 'missing.mid'}: cannot read")
    assert "unsupported suffix '.wav'" in _reason(tmp_path / "a.wav")


def test_rmid_wrapped_midi_is_unwrapped():
    good = (MIDI / "pop909_008.mid").read_bytes()
    riff = b"RIFF" + (len(good) + 12).to_bytes(4, "little") + b"RMIDdata"
    riff += len(good).to_bytes(4, "little") + good
    score, _ = load_score_bytes(riff, "wrapped.rmi")
    assert score.note_num() == load_score_bytes(good)[0].note_num()


def test_save_then_load_roundtrips_notes_tempo_and_meta(tmp_path):
    score, _ = load_score(MIDI / "multitrack_drums.mid")
    out = tmp_path / "sub" / "copy.mid"
    save_score(score, out)
    again, report = load_score(out)
    assert not report
    assert again.note_num() == score.note_num()
    assert [t.is_drum for t in again.tracks] == [t.is_drum for t in score.tracks]
    for a, b in zip(again.tracks, score.tracks, strict=True):
        assert a.notes.numpy()["pitch"].tolist() == b.notes.numpy()["pitch"].tolist()
        assert a.notes.numpy()["time"].tolist() == b.notes.numpy()["time"].tolist()
    assert [t.mspq for t in again.tempos] == [t.mspq for t in score.tempos]
    assert not list(out.parent.glob(".*.tmp")), "temporary file left behind"

    pop, _ = load_score(MIDI / "pop909_008.mid")
    save_score(pop, out)
    again, _ = load_score(out)
    assert [(t.time, t.numerator, t.denominator) for t in again.time_signatures] == [
        (t.time, t.numerator, t.denominator) for t in pop.time_signatures
    ]
    assert len(pop.key_signatures) == 1
    assert [(k.time, k.key, k.tonality) for k in again.key_signatures] == [
        (k.time, k.key, k.tonality) for k in pop.key_signatures
    ]


def test_load_repairs_and_reports(tmp_path, caplog):
    score = symusic.Score(480)
    score.tempos.append(Tempo(0, mspq=0))  # tempo 0: absurd
    track = Track(program=0)
    track.notes.extend([Note(0, 480, 60, 90), Note(240, 480, 60, 90), Note(960, 0, 64, 90)])
    score.tracks.append(track)
    path = tmp_path / "bad.mid"
    save_score(score, path)
    with caplog.at_level(logging.DEBUG, logger="aurl.data.midi_io"):
        loaded, report = load_score(path)
    assert report.counts == {"absurd_tempos": 1, "overlapping_notes": 1, "zero_length_notes": 1}
    assert str(report) == "repaired 1 absurd_tempos, 1 overlapping_notes, 1 zero_length_notes"
    assert [n.duration for n in loaded.tracks[0].notes] == [240, 480, 60]
    assert "bad.mid: repaired" in caplog.text


def test_find_music_files_is_recursive_sorted_and_case_insensitive(tmp_path):
    for rel in ["b/x.MID", "a.mid", "c/d/e.musicxml", "note.txt", "f.Abc", "g.krn", "h.midi"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_music_files(tmp_path)]
    assert found == ["a.mid", "b/x.MID", "c/d/e.musicxml", "f.Abc", "g.krn", "h.midi"]
    with pytest.raises(ValueError, match="not a directory"):
        find_music_files(tmp_path / "a.mid")


ABC = """X:1
T:Test tune
M:3/4
L:1/8
K:G
|: G2 B2 d2 | g4 f2 :|
"""


def test_abc_loads_through_music21(tmp_path):
    path = tmp_path / "tune.abc"
    path.write_text(ABC)
    score, _ = load_score(path)
    pitches = sorted({n.pitch for t in score.tracks for n in t.notes})
    assert pitches == [67, 71, 74, 78, 79]  # G4 B4 D5 F#5 G5
    assert score.note_num() == 5  # music21's MIDI export plays repeats once


def test_bad_notation_file_fails_with_reason(tmp_path):
    path = tmp_path / "broken.musicxml"
    path.write_text("<score-partwise><part id='P1'><measure")
    msg = _reason(path)
    assert msg.startswith(f"{path}: music21 cannot")


def test_music21_export_bug_is_retried(tmp_path, monkeypatch, caplog):
    import music21

    real = music21.midi.translate.music21ObjectToMidiFile
    calls = []

    def flaky(stream):  # first export fails like music21's badly-formed-repeats bug (FACTS.md)
        calls.append(stream)
        if len(calls) == 1:
            raise music21.repeat.ExpanderException("badly formed repeats")
        return real(stream)

    monkeypatch.setattr(music21.midi.translate, "music21ObjectToMidiFile", flaky)
    path = tmp_path / "tune.abc"
    path.write_text(ABC)
    with caplog.at_level(logging.INFO, logger="aurl.data.midi_io"):
        score, _ = load_score(path)
    assert score.note_num() == 5 and len(calls) == 2
    assert "retry (repeats stripped)" in caplog.text


def test_music21_reused_object_bug_is_retried_with_a_deep_copy(tmp_path, monkeypatch):
    import music21

    real = music21.midi.translate.music21ObjectToMidiFile
    calls = []

    def flaky(stream):  # the first two attempts fail like the reused-TimeSignature bug (FACTS.md)
        calls.append(stream)
        if len(calls) <= 2:
            raise music21.exceptions21.StreamException(
                "<TimeSignature 3/4> already found in this Stream"
            )
        return real(stream)

    monkeypatch.setattr(music21.midi.translate, "music21ObjectToMidiFile", flaky)
    path = tmp_path / "tune.abc"
    path.write_text(ABC)
    score, _ = load_score(path)
    assert score.note_num() == 5 and len(calls) == 3
    monkeypatch.setattr(music21.midi.translate, "music21ObjectToMidiFile", lambda s: 1 / 0)
    msg = _reason(path)
    assert msg == f"{path}: music21 cannot convert to MIDI: ZeroDivisionError: division by zero"


def test_every_shared_dataset_file_loads_except_the_broken_ones(shared_datasets):
    files = sorted(shared_datasets.rglob("*.mid"))
    assert len(files) >= 800
    failed, repaired = {}, 0
    for path in files:
        try:
            _, report = load_score(path)
            repaired += bool(report)
        except MidiLoadError as err:
            failed[path.name] = err.reason
    assert failed.keys() == {"ValueError_Control168.mid", "empty.mid"}, failed
    assert failed["empty.mid"] == "no notes"
    assert failed["ValueError_Control168.mid"].startswith("corrupt: ")
    # POP909 piano parts often restrike a pitch before releasing it: most files need that cut
    assert repaired > len(files) // 2


def test_musicxml_from_the_music21_corpus_loads_with_its_parts():
    music21 = pytest.importorskip("music21")
    path = Path(music21.corpus.getWork("bwv66.6"))
    score, report = load_score(path)
    assert path.suffix == ".mxl" and not report
    assert [t.name for t in score.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert score.note_num() == 163
    assert score.ticks_per_quarter == 10080  # music21's MIDI resolution (FACTS.md)
