"""MusicTokenizer: vocabulary layout, exact round trip on real files, beats/types/notes, BPE, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Track

from aurl.config import TokenizerConfig
from aurl.data import midi_io
from aurl.data.roundtrip import note_tuples
from aurl.data.tokenizers import TOKEN_TYPES, MusicTokenizer

DATA = Path(__file__).resolve().parent
REAL = ["pop909_008.mid", "multitrack_drums.mid", "etude_no4.mid"]
KINDS = ["midilike", "remi", "tsd"]


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    out = {name: midi_io.load_score(DATA / "midi" / name)[0] for name in REAL}
    out["nested"] = midi_io.load_score(DATA / "nested" / "multitrack_nested_notes.mid")[0]
    return out


@pytest.fixture(scope="module")
def toks() -> dict[str, MusicTokenizer]:
    return {k: MusicTokenizer(TokenizerConfig(kind=k)) for k in KINDS}


def test_vocabulary_layout_has_pad_zero_and_expected_sizes(toks):
    # 88 pitches, 32 velocities, 96 time steps (12 beats x 8), 62 drum pitches, 129 programs
    expected = {
        "midilike": 3 + 88 * 2 + 32 + 96 + 62 * 2 + 129,
        "remi": 3 + 1 + 32 + 88 + 32 + 96 + 62 + 129,
    }
    expected["tsd"] = 3 + 88 + 32 + 96 + 96 + 62 + 129
    for kind, tok in toks.items():
        assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
        assert tok.vocab_size == len(tok.base_vocab) == expected[kind], kind
    assert "NoteOn_60" in toks["midilike"].base_vocab
    assert "TimeShift_1.0.8" in toks["midilike"].base_vocab
    assert "Program_0" in toks["tsd"].base_vocab
    # time signatures off explicitly (miditok 3.1.0 defaults True): no TimeSig tokens anywhere
    assert not any(t.startswith("TimeSig") for tok in toks.values() for t in tok.base_vocab)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_of_encode_equals_preprocess_on_real_files(kind, toks, scores):
    tok = toks[kind]
    for name, score in scores.items():
        ids = tok.encode(score)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        expected = note_tuples(tok.preprocess(score))
        assert note_tuples(tok.decode(ids)) == expected, f"{kind} {name}"
        assert tok.count_notes(ids) == sum(expected.values())


def test_programs_survive_in_one_stream(toks, scores):
    tok = toks["midilike"]
    decoded = tok.decode(tok.encode(scores["multitrack_drums.mid"]))
    programs = {(-1 if t.is_drum else t.program) for t in decoded.tracks}
    original = {
        (-1 if t.is_drum else t.program) for t in scores["multitrack_drums.mid"].tracks if t.notes
    }
    assert programs == original and -1 in programs


def test_nested_same_pitch_notes_are_ended_at_the_inner_onset():
    # A(0..32) holds B(8..16) which holds C(10..12): FIFO NOTE_OFF pairing would swap durations
    track = Track(program=0)
    for time, dur in [(0, 32), (8, 8), (10, 2)]:
        track.notes.append(Note(time * 60, dur * 60, 60, 100))
    score = Score(480)
    score.tracks.append(track)
    tok = MusicTokenizer(TokenizerConfig())
    pre = tok.preprocess(score)
    ticks = pre.ticks_per_quarter * 60 // 480  # 60 source ticks in the tokenizer's resolution
    assert sorted((n.time // ticks, n.duration // ticks) for n in pre.tracks[0].notes) == [
        (0, 8),
        (8, 2),
        (10, 2),
    ]
    assert note_tuples(tok.decode(tok.encode(score))) == note_tuples(pre)


def test_decode_tolerates_missing_bos_eos_and_pad(toks, scores):
    tok = toks["remi"]
    ids = tok.encode(scores["etude_no4.mid"])
    reference = note_tuples(tok.decode(ids))
    assert note_tuples(tok.decode(ids[1:-1] + [tok.pad_id] * 5)) == reference
    assert note_tuples(tok.decode([tok.bos_id, tok.eos_id])) == note_tuples(Score(8))


@pytest.mark.parametrize("kind", KINDS)
def test_token_beats_of_note_tokens_are_note_onsets(kind, toks, scores):
    tok = toks[kind]
    score = scores["pop909_008.mid"]
    ids = np.asarray(tok.encode(score))
    beats = tok.token_beats(ids)
    assert np.all(np.diff(beats) >= 0)  # time never goes back
    is_note = np.isin(
        ids, [i for i, t in enumerate(tok.base_vocab) if t.split("_")[0] in ("NoteOn", "Pitch")]
    )
    pre = tok.preprocess(score)
    onsets = sorted(n.time / pre.ticks_per_quarter for t in pre.tracks for n in t.notes)
    np.testing.assert_allclose(np.sort(beats[is_note]), onsets)


def test_token_types_name_each_category(toks):
    tok = toks["midilike"]
    v = tok.base_vocab
    ids = [
        v.index(t) for t in ["PAD_None", "NoteOn_60", "TimeShift_1.0.8", "Velocity_91", "Program_0"]
    ]
    names = [TOKEN_TYPES[c] for c in tok.token_type(ids)]
    assert names == ["special", "pitch", "time", "velocity", "program"]
    remi = toks["remi"]
    assert TOKEN_TYPES[remi.token_type([remi.base_vocab.index("Bar_None")])[0]] == "bar/position"


def test_transpose_table_moves_pitches_and_flags_out_of_range(toks):
    tok = toks["midilike"]
    v = tok.base_vocab
    up = tok.transpose_table(2)
    assert v[up[v.index("NoteOn_60")]] == "NoteOn_62"
    assert v[up[v.index("NoteOff_60")]] == "NoteOff_62"
    assert up[v.index("NoteOn_108")] == -1
    assert up[v.index("DrumOn_36")] == v.index("DrumOn_36")  # drums keep their instrument
    assert up[v.index("Velocity_91")] == v.index("Velocity_91")


def test_describe_lists_id_ranges_and_hash(toks):
    text = toks["midilike"].describe()
    assert toks["midilike"].hash in text
    assert "3-90" in text and "NoteOn_21 .. NoteOn_108" in text


def test_bpe_shortens_round_trips_and_reloads_bit_exactly(tmp_path, scores):
    tok = MusicTokenizer(TokenizerConfig(kind="tsd"))
    train = [scores["pop909_008.mid"], scores["etude_no4.mid"]]
    tok.train_bpe(train, 620)
    assert tok.is_trained and tok.vocab_size == 620 and tok.cfg.bpe_vocab_size == 620
    assert tok.hash != TokenizerConfig(kind="tsd", bpe_vocab_size=620).hash()  # covers the merges
    for score in scores.values():
        ids = tok.encode(score)
        base = tok.encode_base(score)
        assert len(ids) < len(base)
        np.testing.assert_array_equal(tok.expand(ids), base)
        assert note_tuples(tok.decode(ids)) == note_tuples(tok.preprocess(score))
        assert tok.count_notes(ids) == tok.count_notes(base)
    tok.save(tmp_path)
    again = MusicTokenizer.load(tmp_path)
    assert again.hash == tok.hash and again.vocab_size == 620
    for score in scores.values():
        assert again.encode(score) == tok.encode(score)
    assert tok.transpose_table(1) is None


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_ids(kind, tmp_path, toks, scores):
    toks[kind].save(tmp_path)
    again = MusicTokenizer.load(tmp_path)
    assert again.cfg == toks[kind].cfg and again.hash == toks[kind].hash
    for score in scores.values():
        assert again.encode(score) == toks[kind].encode(score)


def test_load_reports_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="aurl prepare"):
        MusicTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="not an aurl tokenizer"):
        MusicTokenizer.load(tmp_path)


def test_without_programs_pitched_tracks_merge_and_drums_drop(scores):
    tok = MusicTokenizer(TokenizerConfig(kind="remi", use_programs=False))
    score = scores["multitrack_drums.mid"]
    ids = tok.encode(score)
    assert not any(tok.base_vocab[i].startswith("Program") for i in ids)
    decoded = tok.decode(ids)
    assert note_tuples(decoded) == note_tuples(tok.preprocess(score))
    pitched = sum(len(t.notes) for t in score.tracks if not t.is_drum)
    assert len(decoded.tracks) == 1 and 0 < decoded.note_num() <= pitched
