import math

import pytest
import torch

from aurl.generation.filters import (
    FILTERS,
    apply_filters,
    min_p,
    repetition_penalty,
    temperature,
    top_k,
    top_p,
)

PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = PROBS.log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_registry_names_every_filter():
    assert set(FILTERS) == {"temperature", "top_k", "top_p", "min_p", "repetition_penalty"}


def test_top_k_leaves_exactly_k_candidates_per_row():
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    out = top_k(logits, 7)
    assert (torch.isfinite(out).sum(dim=-1) == 7).all()
    # the kept ones are the 7 largest, unchanged
    top = torch.topk(logits, 7).indices
    assert torch.equal(torch.gather(out, 1, top), torch.gather(logits, 1, top))
    assert top_k(logits, 0) is logits


@pytest.mark.parametrize(
    ("p", "expect"),
    [(0.4, [0]), (0.7, [0, 1]), (0.8, [0, 1]), (0.81, [0, 1, 2]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_keeps_smallest_set_reaching_p(p, expect):
    assert kept(top_p(LOGITS, p)) == expect


def test_min_p_keeps_tokens_above_fraction_of_top():
    assert kept(min_p(LOGITS, 0.5)) == [0, 1]  # 0.3 >= 0.25, 0.15 < 0.25
    assert kept(min_p(LOGITS, 0.1)) == [0, 1, 2]


def test_temperature_scales_logits():
    assert torch.allclose(temperature(LOGITS, 0.5), LOGITS * 2)
    sharp = torch.softmax(temperature(LOGITS, 0.5), -1)
    assert sharp[0, 0] > PROBS[0, 0]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    out = repetition_penalty(logits, 2.0, torch.tensor([[0, 1, 1]]))
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]


def test_apply_filters_rejects_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match="unknown sampling filter"):
        apply_filters(LOGITS, {"nucleus": 0.9})
    with pytest.raises(ValueError, match="top_p"):
        top_p(LOGITS, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        temperature(LOGITS, 0.0)


def test_filters_never_ban_a_whole_row():
    logits = torch.full((1, 10), -5.0)
    out = apply_filters(logits, {"top_k": 1, "top_p": 0.01, "min_p": 1.0})
    assert torch.isfinite(out).sum() >= 1
    assert not math.isnan(torch.softmax(out, -1).sum().item())
