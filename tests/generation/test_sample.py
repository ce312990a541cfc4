import itertools
import math
from types import SimpleNamespace

import pytest
import symusic
import torch
from torch import nn

from aurl.generation import constraints as C
from aurl.generation.sample import StopRule, beam_search, sample

# ---------------------------------------------------------------------------------------------
# a toy "model" with the MusicTransformer forward/cache interface whose scores we can enumerate

TOY_V, TOY_EOS = 5, 2  # ids: 0 PAD, 1 BOS, 2 EOS, 3 A, 4 B (PAD/BOS never predicted)
TOY_TABLE = {  # p(EOS, A, B | last token): greedy takes A first, but B then EOS scores best
    1: (0.1, 0.5, 0.4),
    3: (0.3, 0.35, 0.35),
    4: (0.95, 0.03, 0.02),
}


class ToyCache:
    def __init__(self, batch: int, max_len: int) -> None:
        self.last = torch.zeros(batch, dtype=torch.long)
        self.length, self.max_len = 0, max_len

    def reorder(self, idx: torch.Tensor) -> None:
        self.last = self.last[idx]

    def drop_oldest(self, n: int) -> None:
        self.length -= n


class ToyModel(nn.Module):
    """log p(next) depends on the previous token only (a bigram table we can enumerate)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(max_seq_len=64, position="rope")

    def new_cache(self, batch: int, max_len: int) -> ToyCache:
        return ToyCache(batch, max_len)

    def table(self, last: int) -> torch.Tensor:
        return torch.tensor([0.0, 0.0, *TOY_TABLE[last]]).log()  # PAD, BOS: -inf

    def forward(self, tokens, cache=None, logits_for="last"):
        cache.last = tokens[:, -1].clone()
        cache.length += tokens.shape[1]
        rows = [self.table(int(a)) for a in cache.last]
        return SimpleNamespace(logits=torch.stack(rows)[:, None, :])


def brute_force_best(model: ToyModel, max_new: int) -> tuple[list[int], float]:
    best, best_score = None, -math.inf
    for n in range(1, max_new + 1):
        for body in itertools.product([3, 4], repeat=n - 1):
            for end in [TOY_EOS, 3, 4] if n == max_new else [TOY_EOS]:
                seq = [*body, end]
                total, last = 0.0, 1
                for t in seq:
                    total += float(model.table(last)[t])
                    last = t
                if total / n > best_score:
                    best, best_score = seq, total / n
    return best, best_score


def test_beam_search_returns_the_highest_scoring_sequence_on_an_enumerable_model():
    model = ToyModel()
    rule = StopRule(eos_id=TOY_EOS, max_new_tokens=6)
    expect, expect_score = brute_force_best(model, 6)
    got, score = beam_search(model, [1], beams=4, rule=rule)
    assert got == expect
    assert math.isclose(score, expect_score, rel_tol=1e-5)
    greedy, _ = beam_search(model, [1], beams=1, rule=rule)
    assert greedy != expect  # the toy really needs the search


# ---------------------------------------------------------------------------------------------
# the tiny real model


def test_cached_sampling_equals_uncached_sampling_for_the_same_seed(tiny_bundle):
    tok, model = tiny_bundle.tokenizer, tiny_bundle.model
    vocab = C.Vocab.from_tokenizer(tok)
    rule = StopRule(tok.eos_id, 50)  # stays inside the 64-token context: no sliding
    kw = {"num": 3, "rule": rule, "filters": {"top_p": 0.95}, "seeds": [5, 6, 7]}
    a = sample(model, [tok.bos_id], constraints=C.ConstraintSet(vocab), use_cache=True, **kw)
    b = sample(model, [tok.bos_id], constraints=C.ConstraintSet(vocab), use_cache=False, **kw)
    assert a == b
    assert len({tuple(r) for r in a}) == 3  # different seeds, different pieces


def test_a_row_depends_on_its_seed_only_not_on_its_batch(tiny_bundle):
    tok, model = tiny_bundle.tokenizer, tiny_bundle.model
    rule = StopRule(tok.eos_id, 40)
    both = sample(model, [tok.bos_id], num=2, rule=rule, seeds=[10, 11])
    alone = sample(model, [tok.bos_id], num=1, rule=rule, seeds=[11])
    assert both[1] == alone[0]


def test_sliding_window_generates_past_the_context_and_stays_decodable(tiny_bundle):
    tok, model = tiny_bundle.tokenizer, tiny_bundle.model
    assert model.cfg.max_seq_len == 64
    vocab = C.Vocab.from_tokenizer(tok)
    cons = C.ConstraintSet(vocab)
    rule = StopRule(tok.eos_id, 300)
    (new,) = sample(model, [tok.bos_id], num=1, rule=rule, constraints=cons, seeds=[3])
    ids = C.finish([tok.bos_id, *new], vocab)
    assert len(new) > 3 * 64 or new[-1] == tok.eos_id
    assert len(new) > 64
    score = tok.decode(ids)
    assert score.note_num() == tok.count_notes(ids) > 0


def test_sampling_stops_exactly_at_the_requested_time(tiny_bundle):
    tok, model = tiny_bundle.tokenizer, tiny_bundle.model
    vocab = C.Vocab.from_tokenizer(tok)
    # a random model left free piles up notes at one instant (Program changes make that cheap);
    # capping polyphony forces time forward so the 2,000-token budget reaches 8 beats
    cons = C.ConstraintSet(vocab, [C.EndAt(vocab, 8.0), C.Polyphony(vocab, 4)])
    rows = sample(
        model, [tok.bos_id], num=2, rule=StopRule(tok.eos_id, 2000, 8.0), constraints=cons
    )
    for new in rows:
        state = C.replay([tok.bos_id, *new], vocab)
        assert state.time == 8.0
        assert math.isclose(
            tok.token_beats(C.finish([tok.bos_id, *new], vocab))[-1], 8.0, abs_tol=1 / 8
        )


def test_beam_search_with_constraints_and_cache_reorder_is_decodable(tiny_bundle):
    tok, model = tiny_bundle.tokenizer, tiny_bundle.model
    vocab = C.Vocab.from_tokenizer(tok)
    cons = C.ConstraintSet(vocab, [C.Key(vocab, "G:maj"), C.EndAt(vocab, 4.0)])
    best, score = beam_search(
        model, [tok.bos_id], beams=3, rule=StopRule(tok.eos_id, 120, 4.0), constraints=cons
    )
    ids = C.finish([tok.bos_id, *best], vocab)
    decoded = tok.decode(ids)
    assert score <= 0
    assert all(n.pitch % 12 in C.parse_key("G:maj") for t in decoded.tracks for n in t.notes)


def test_three_minute_piece_keeps_time_and_bars_continuous(tiny_bundle, tmp_path):
    """--seconds 180 on a 64-token context: many slides of the cache, one unbroken timeline."""
    from aurl.generation.pipeline import DEFAULT_BPM, generate

    # a voice limit keeps the random model's tokens per beat bounded: since every note must end
    # within the note-length cap, unlimited random voices would spend the token budget on NoteOffs
    s = generate(
        tiny_bundle, out=tmp_path, num=1, seconds=180.0, max_polyphony=4,
        wav=False, musicxml=False, png=False,
    )  # fmt: skip
    piece = s.pieces[0]
    assert (
        piece.new_tokens > 4 * tiny_bundle.model.cfg.max_seq_len
    )  # random weights: big time shifts
    assert piece.beats == pytest.approx(180.0 * DEFAULT_BPM / 60, abs=1 / 8)
    score = symusic.Score(piece.files["midi"]).to("quarter")
    assert score.end() == pytest.approx(piece.beats, abs=0.25)


def test_learned_positions_slide_by_re_encoding_the_window(tmp_path):
    from tinymodel import make_bundle

    from aurl.bundle import load_bundle

    bundle = load_bundle(make_bundle(tmp_path / "learned", position="learned"))
    tok = bundle.tokenizer
    vocab = C.Vocab.from_tokenizer(tok)
    # no EOS stop (id -1): exactly 150 tokens, so the 64-position window slides many times
    (free,) = sample(bundle.model, [tok.bos_id], num=1, rule=StopRule(-1, 150), seeds=[1])
    assert len(free) == 150
    (new,) = sample(bundle.model, [tok.bos_id], num=1, rule=StopRule(tok.eos_id, 150),
                    constraints=C.ConstraintSet(vocab), seeds=[1])  # fmt: skip
    ids = C.finish([tok.bos_id, *new], vocab)
    assert tok.decode(ids).note_num() == tok.count_notes(ids)
