import wave

import mido
import music21
import numpy as np
import pretty_midi
import pytest
import symusic

from aurl.generation import export


@pytest.fixture
def chord_score() -> symusic.Score:
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 100.0))
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    for program, pitches in ((0, (60, 64, 67)), (40, (72, 74))):
        track = symusic.Track(f"p{program}", program, False)
        for i, p in enumerate(pitches):
            track.notes.append(symusic.Note(i * 480, 480, p, 80))
        score.tracks.append(track)
    return score


def test_export_piece_writes_every_format_that_opens_in_other_readers(chord_score, tmp_path):
    files = export.export_piece(chord_score, tmp_path / "piece_00")
    assert {"midi", "musicxml", "png", "wav", "renderer"} <= set(files)
    mid = mido.MidiFile(files["midi"])
    assert sum(msg.type == "note_on" and msg.velocity > 0 for tr in mid.tracks for msg in tr) == 5
    pm = pretty_midi.PrettyMIDI(files["midi"])
    assert sorted(i.program for i in pm.instruments) == [0, 40]
    assert round(pm.get_tempo_changes()[1][0]) == 100
    xml = music21.converter.parse(files["musicxml"])
    assert len(xml.recurse().notes) >= 4  # chords may merge the 3 piano notes... none are lost
    assert sorted(p.midi for n in xml.recurse().notes for p in n.pitches) == [60, 64, 67, 72, 74]
    assert xml.recurse().getElementsByClass("TimeSignature")[0].ratioString == "3/4"
    assert (tmp_path / "piece_00.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with wave.open(files["wav"]) as fh:
        seconds = fh.getnframes() / fh.getframerate()
    assert 1.8 < seconds < 2.5 + 1.0  # 3 beats at 100 BPM = 1.8 s, plus release/tail
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_builtin_synth_puts_the_note_at_its_pitch(chord_score):
    one = symusic.Score(480)
    track = symusic.Track("a", 0, False)
    track.notes.append(symusic.Note(0, 960, 69, 100))
    one.tracks.append(track)
    audio = export.synthesize(one)
    spectrum = np.abs(np.fft.rfft(audio[: export.SAMPLE_RATE // 2]))
    peak_hz = np.argmax(spectrum) * export.SAMPLE_RATE / (export.SAMPLE_RATE // 2)
    assert abs(peak_hz - 440) < 3
    assert np.abs(audio).max() <= 1.0


def test_wav_renderer_is_named(chord_score, tmp_path):
    export.write_midi(chord_score, tmp_path / "a.mid")
    renderer = export.write_wav(chord_score, tmp_path / "a.mid", tmp_path / "a.wav")
    assert (
        renderer == "builtin"
        if export.find_soundfont() is None
        else renderer.startswith("fluidsynth:")
    )
