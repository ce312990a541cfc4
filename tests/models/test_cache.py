"""RowCache + row_step: rows at different positions decode as if each ran alone with a KVCache."""

from __future__ import annotations

import pytest
import torch

from aurl.config import ModelConfig
from aurl.models import build_model
from aurl.models.cache import RowCache, row_step, supports_rows

CFG = {"vocab_size": 50, "d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_seq_len": 32, "dropout": 0.0}  # fmt: skip


def _model(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**CFG, **kw})).eval()


def _prefill(model, ids, max_len=32):
    kv = model.new_cache(1, max_len)
    model(torch.tensor([ids]), cache=kv, logits_for="last")
    return kv


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_rows_at_different_lengths_match_their_single_row_forward(position):
    model = _model(position=position)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 50, (n,), generator=g).tolist() for n in (1, 4, 9)]
    rows = RowCache.for_model(model, 4)  # one spare row stays untouched
    refs = []
    for r, p in enumerate(prompts):
        refs.append(_prefill(model, p))
        rows.load(r, _prefill(model, p))
    for _ in range(6):
        toks = torch.randint(1, 50, (3,), generator=g)
        out = row_step(model, toks, rows)  # (3, V)
        for r in range(3):
            ref = model(toks[r : r + 1, None], cache=refs[r], logits_for="last").logits[0, -1]
            torch.testing.assert_close(out[r], ref.float(), atol=1e-5, rtol=1e-5)
    assert rows.lengths == [7, 10, 15, 0]


def test_move_drop_oldest_and_clear_keep_rows_exact():
    model = _model()
    rows = RowCache.for_model(model, 2, max_len=16)
    a, b = [3, 4, 5, 6, 7, 8], [9, 10]
    rows.load(0, _prefill(model, a, 16))
    rows.load(1, _prefill(model, b, 16))
    rows.move(1, 0)
    rows.clear(1)
    ref = _prefill(model, b, 16)
    out = row_step(model, torch.tensor([11]), rows)
    expect = model(torch.tensor([[11]]), cache=ref, logits_for="last").logits[0, -1]
    torch.testing.assert_close(out[0], expect, atol=1e-5, rtol=1e-5)
    # dropping the 2 oldest keeps absolute positions, as KVCache.drop_oldest does
    rows.drop_oldest(0, 2)
    ref.drop_oldest(2)
    assert (rows.lengths[0], rows.offsets[0], rows.position(0)) == (1, 2, 3)
    out = row_step(model, torch.tensor([12]), rows)
    expect = model(torch.tensor([[12]]), cache=ref, logits_for="last").logits[0, -1]
    torch.testing.assert_close(out[0], expect, atol=1e-5, rtol=1e-5)


def test_full_row_and_bad_shapes_are_refused():
    model = _model()
    rows = RowCache.for_model(model, 1, max_len=4)
    rows.load(0, _prefill(model, [1, 2, 3, 4], 4))
    with pytest.raises(ValueError, match="full"):
        row_step(model, torch.tensor([5]), rows)
    with pytest.raises(ValueError, match="tokens must be"):
        row_step(model, torch.tensor([1, 2]), rows)
    with pytest.raises(ValueError, match="drop_oldest"):
        rows.drop_oldest(0, 9)


def test_supports_rows_only_for_full_causal_attention():
    assert supports_rows(_model())
    assert not supports_rows(_model(attention="sliding_window", window=8))
