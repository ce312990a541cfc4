import numpy as np
import pytest
import torch

from aurl.config import TokenizerConfig
from aurl.data.midi_io import load_score
from aurl.data.tokenizers import MusicTokenizer
from aurl.generation import constraints as C


@pytest.fixture(scope="module", params=["midilike", "remi", "tsd"])
def tok(request) -> MusicTokenizer:
    return MusicTokenizer(TokenizerConfig(kind=request.param))


@pytest.fixture(scope="module")
def midilike() -> MusicTokenizer:
    return MusicTokenizer(TokenizerConfig(kind="midilike"))


def test_grammar_accepts_every_token_of_real_encoded_music(tok, etude):
    """The grammar must not forbid what the tokenizer itself writes (else the model is fought)."""
    vocab = C.Vocab.from_tokenizer(tok)
    grammar = C.Grammar(vocab)
    score, _ = load_score(etude)
    ids = tok.encode(score)
    state = C.SeqState()
    banned = []
    for i, t in enumerate(ids):
        if tok.base_vocab[t] not in ("BOS_None",) and grammar.banned(state)[t]:
            banned.append((i, tok.base_vocab[t], state.phase))
        C.advance(state, t, vocab)
    assert banned == []
    assert state.phase == "done"
    assert state.notes == tok.count_notes(ids)


def random_constrained(tok: MusicTokenizer, steps: int, seed: int, extra=()) -> list[int]:
    vocab = C.Vocab.from_tokenizer(tok)
    cons = C.ConstraintSet(vocab, [c(vocab) for c in extra])
    cons.start([[tok.bos_id]])
    gen = torch.Generator().manual_seed(seed)
    ids = [tok.bos_id]
    for _ in range(steps):
        logits = cons.apply(torch.randn(1, vocab.size, generator=gen) * 3)
        t = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        ids.append(t)
        cons.advance([t])
        if t == tok.eos_id:
            break
    return C.finish(ids, vocab)


def test_grammar_never_lets_an_undecodable_sequence_through_in_200_random_steps(tok):
    for seed in range(5):
        ids = random_constrained(tok, 200, seed)
        assert ids[-1] == tok.eos_id
        score = tok.decode(ids)
        # decodable = every note the tokens start comes out of the decoder as a note
        assert score.note_num() == tok.count_notes(ids) > 0 or tok.count_notes(ids) == 0
        assert all(n.duration > 0 for t in score.tracks for n in t.notes)


def test_key_mask_bans_exactly_the_out_of_scale_note_ons(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    mask = C.Key(vocab, "D:min").banned(C.SeqState())
    scale = {2, 4, 5, 7, 9, 10, 0, 1}  # D natural minor + C# leading tone
    expected = [
        i
        for i, s in enumerate(midilike.base_vocab)
        if s.startswith("NoteOn_") and int(s.split("_")[1]) % 12 not in scale
    ]
    assert np.flatnonzero(mask).tolist() == expected


def test_parse_key_spellings_and_errors():
    assert C.parse_key("Bb:maj") == (0, 2, 3, 5, 7, 9, 10)
    assert C.parse_key("F#:maj") == (1, 3, 5, 6, 8, 10, 11)
    with pytest.raises(ValueError, match="D:min"):
        C.parse_key("H:min")
    with pytest.raises(ValueError, match="modes"):
        C.parse_key("C:lydian")


def test_pitch_range_bans_note_starts_outside_only(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    mask = C.PitchRange(vocab, 48, 72).banned(C.SeqState())
    names = [midilike.base_vocab[i] for i in np.flatnonzero(mask)]
    assert all(n.startswith("NoteOn_") for n in names)
    assert len(names) == (48 - 21) + (108 - 72)  # vocabulary spans pitches 21..108
    with pytest.raises(ValueError, match="pitch range"):
        C.PitchRange(vocab, 80, 40)


def test_polyphony_counts_sounding_notes(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    poly = C.Polyphony(vocab, 2)
    ids = [vocab.id_of("NoteOn", p) for p in (60, 64)]
    state = C.SeqState()
    C.advance(state, ids[0], vocab)
    assert poly.banned(state) is None
    C.advance(state, ids[1], vocab)
    assert poly.banned(state)[vocab.id_of("NoteOn", 67)]
    C.advance(state, vocab.id_of("NoteOff", 60), vocab)
    assert poly.banned(state) is None


@pytest.mark.parametrize("seed", range(4))
def test_sampled_sequences_respect_polyphony_and_key(midilike, seed):
    extra = [lambda v: C.Polyphony(v, 3), lambda v: C.Key(v, "C:maj")]
    score = midilike.decode(random_constrained(midilike, 300, seed, extra=extra))
    notes = [n for t in score.tracks for n in t.notes]
    assert notes and all(n.pitch % 12 in C.parse_key("C:maj") for n in notes)
    for n in notes:  # at no onset do more than 3 notes sound
        assert sum(m.time <= n.time < m.time + m.duration for m in notes) <= 3


def test_soft_mode_penalizes_instead_of_forbidding(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    cons = C.ConstraintSet(vocab, [C.Key(vocab, "C:maj", strict=False)], penalty=4.0)
    cons.start([[midilike.bos_id, midilike.base_vocab.index("Program_0")]])
    out = cons.apply(torch.zeros(1, vocab.size))
    cs = vocab.id_of("NoteOn", 61)  # C#: out of C major, allowed by the grammar
    assert out[0, cs].item() == -4.0
    assert out[0, vocab.id_of("NoteOn", 60)].item() == 0.0


def test_density_pushes_towards_target(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    dens = C.Density(vocab, 2.0)
    sparse = C.SeqState(time=4.0, notes=1)
    dense = C.SeqState(time=4.0, notes=20)
    assert dens.banned(sparse)[vocab.id_of("TimeShift", 1.0)]
    assert dens.banned(dense)[vocab.id_of("NoteOn", 60)]
    assert dens.banned(C.SeqState(time=4.0, notes=8)) is None


def test_end_at_bans_time_shifts_past_the_end(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    mask = C.EndAt(vocab, 8.0).banned(C.SeqState(time=7.0))
    assert not mask[vocab.id_of("TimeShift", 1.0)]
    assert mask[vocab.id_of("TimeShift", 2.0)]


def test_end_not_before_bans_only_eos_and_only_before_the_end(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    rule = C.EndNotBefore(vocab, 8.0)
    early = rule.banned(C.SeqState(time=7.5))
    assert early[vocab.eos_id] and early.sum() == 1
    assert rule.banned(C.SeqState(time=8.0)) is None


def test_remi_positions_increase_within_the_bar_and_fit_the_meter():
    tok = MusicTokenizer(TokenizerConfig(kind="remi"))
    vocab = C.Vocab.from_tokenizer(tok)
    grammar = C.Grammar(vocab)
    state = C.replay(
        [tok.bos_id, tok.base_vocab.index("Bar_None"), tok.base_vocab.index("Position_8")], vocab
    )
    state.phase = "event"
    banned = grammar.banned(state)
    positions = {
        int(s.split("_")[1]): i for i, s in enumerate(tok.base_vocab) if s.startswith("Position_")
    }
    assert banned[positions[8]] and banned[positions[3]] and not banned[positions[9]]
    assert all(banned[i] for p, i in positions.items() if p >= 4 * 8)  # 4/4 bar of 8 steps per beat


def test_finish_closes_sounding_notes_and_ends_with_eos(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    b = midilike.base_vocab.index
    ids = [
        midilike.bos_id,
        b("Program_0"),
        b("NoteOn_60"),
        b("Velocity_91")
        if "Velocity_91" in midilike.base_vocab
        else vocab.type_mask["Velocity"].argmax(),
        b("TimeShift_1.0.8"),
        b("Program_0"),
    ]
    out = C.finish(ids, vocab)
    assert out[:5] == ids[:5] and out[-1] == midilike.eos_id
    score = midilike.decode(out)
    assert score.note_num() == 1


def test_programs_bans_other_instruments_only(midilike):
    vocab = C.Vocab.from_tokenizer(midilike)
    mask = C.Programs(vocab, [0, 40]).banned(C.SeqState())
    names = {midilike.base_vocab[i] for i in np.flatnonzero(mask)}
    assert "Program_0" not in names and "Program_40" not in names
    others = {s for s in midilike.base_vocab if s.startswith("Program_")} - {
        "Program_0",
        "Program_40",
    }
    assert names == others - {"Program_-1"}  # drums are never generated anyway (grammar)


@pytest.mark.parametrize("kind", ["tsd", "midilike"])
def test_bpe_merges_are_sampled_and_their_base_tokens_obey_the_grammar(kind, etude):
    tok = MusicTokenizer(TokenizerConfig(kind=kind))
    score, _ = load_score(etude)
    tok.train_bpe([score], len(tok.base_vocab) + 60)
    vocab = C.Vocab.from_tokenizer(tok)
    extra = [lambda v: C.MaxDuration(v, 1.0)] if kind == "tsd" else []
    grammar = C.Grammar(vocab)
    merges_used = 0
    for seed in range(3):
        ids = random_constrained(tok, 150, seed, extra)
        merges_used += sum(t >= len(tok.base_vocab) for t in ids)
        state = C.SeqState()
        for t in tok.expand(ids)[1:]:  # after BOS, every base token must be one the grammar allows
            assert not grammar.banned(state)[t], (tok.base_vocab[t], state.phase)
            C.advance(state, int(t), vocab)
        decoded = tok.decode(ids)
        assert decoded.note_num() == tok.count_notes(ids)
        if kind == "tsd":  # the duration cap holds inside merges too
            durations = [n.duration for t in decoded.tracks for n in t.notes]
            assert max(durations, default=0) <= decoded.ticks_per_quarter
    assert merges_used > 0
