"""Blocks: rotary positions, norms, MLP, TransformerBlock (causal and bidirectional), KVCache."""

from __future__ import annotations

import pytest
import torch

from aurl.config import ModelConfig
from aurl.models.blocks import (
    MLP,
    KVCache,
    Rotary,
    apply_rotary,
    make_block,
    make_norm,
    swiglu_hidden,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from 2 threads; on a loaded machine the hand-off costs 3-4x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_rotary_scores_depend_only_on_relative_position() -> None:
    rotary = Rotary(16, max_len=8)  # grows past 8 on demand
    q, k = randn(16, seed=1), randn(16, seed=2)

    def score(i: int, j: int) -> float:
        cq, sq = rotary(1, i)
        ck, sk = rotary(1, j)
        return float(apply_rotary(q, cq[0], sq[0]) @ apply_rotary(k, ck[0], sk[0]))

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    assert rotary.cos.shape[0] >= 106


def test_rotary_preserves_norm_and_position_zero_is_identity() -> None:
    rotary = Rotary(8)
    x = randn(3, 8)
    cos, sin = rotary(3, 0)
    y = apply_rotary(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[0], x[0])


def test_make_norm_kinds_and_error() -> None:
    x = randn(2, 5, 16) * 3 + 1
    ln = make_norm("layernorm", 16)(x)
    torch.testing.assert_close(ln.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    rms = make_norm("rmsnorm", 16)(x)
    torch.testing.assert_close(rms.pow(2).mean(-1), torch.ones(2, 5), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"model\.norm='batchnorm'"):
        make_norm("batchnorm", 16)


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_mlp_shapes_and_swiglu_keeps_parameter_count_close(kind: str) -> None:
    mlp = MLP(32, 96, kind)
    assert mlp(randn(2, 7, 32)).shape == (2, 7, 32)
    n = sum(p.numel() for p in mlp.parameters())
    assert swiglu_hidden(96) == 64
    assert n == (2 * 32 * 96 if kind == "gelu" else 3 * 32 * 64)
    with pytest.raises(ValueError, match=r"model\.mlp"):
        MLP(32, 96, "relu")


def block_cfg(**kw) -> ModelConfig:
    return ModelConfig(**({"d_model": 32, "n_heads": 4, "d_ff": 64, "dropout": 0.0} | kw))


@pytest.mark.parametrize("attention", ["full", "sliding_window", "hierarchical"])
def test_bidirectional_block_sees_the_future_and_ignores_padding(attention: str) -> None:
    torch.manual_seed(0)
    block = make_block(
        block_cfg(attention=attention, window=4, global_stride=2), causal=False
    ).eval()
    rotary = Rotary(8)
    x = randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    rope = rotary(12)
    out = block(x, rope=rope, key_mask=mask)
    assert out.shape == (2, 12, 32)
    y = x.clone()
    y[1, 9:] = 100.0  # padding content must not matter to real positions
    torch.testing.assert_close(
        block(y, rope=rope, key_mask=mask)[1, :9], out[1, :9], atol=1e-5, rtol=0
    )
    z = x.clone()
    z[:, 10] += randn(32, seed=5)  # a later token changes an earlier position (bidirectional)
    assert (block(z, rope=rope, key_mask=mask)[0, 8] - out[0, 8]).abs().max() > 1e-4


def test_block_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    block = make_block(block_cfg(dropout=0.5))
    x = randn(1, 6, 32)
    block.train()
    torch.manual_seed(1)
    a = block(x)
    torch.manual_seed(2)
    assert (a - block(x)).abs().max() > 1e-4
    block.eval()
    torch.testing.assert_close(block(x), block(x))


def filled_cache(batch: int = 3, length: int = 6, max_len: int = 10) -> KVCache:
    cache = KVCache(2, batch, 1, max_len, 2)
    # each key holds (row, position) so moves are visible
    rows = torch.arange(batch, dtype=torch.float32)[:, None, None, None].expand(batch, 1, length, 1)
    pos = torch.arange(length, dtype=torch.float32)[None, None, :, None].expand(batch, 1, length, 1)
    kv = torch.cat([rows, pos], dim=-1)  # (B, 1, T, 2)
    for layer in range(2):
        cache.store(layer, kv, -kv)
    cache.advance(length)
    return cache


def test_cache_store_returns_all_valid_slots() -> None:
    cache = filled_cache()
    k, _ = cache.store(0, torch.full((3, 1, 2, 2), 7.0), torch.full((3, 1, 2, 2), 7.0))
    assert k.shape == (3, 1, 8, 2)
    assert k[0, 0, 5].tolist() == [0.0, 5.0] and k[0, 0, 6].tolist() == [7.0, 7.0]


def test_cache_reorder_moves_rows() -> None:
    cache = filled_cache()
    cache.reorder(torch.tensor([2, 0, 0]))
    assert cache.keys[1, :, 0, :6, 0].tolist() == [[2.0] * 6, [0.0] * 6, [0.0] * 6]
    assert cache.values[0, 0, 0, 3].tolist() == [-2.0, -3.0]


def test_cache_drop_oldest_shifts_and_keeps_absolute_positions() -> None:
    cache = filled_cache()
    cache.drop_oldest(4)
    assert (cache.length, cache.offset, cache.position) == (2, 4, 6)
    assert cache.keys[0, 1, 0, :2, 1].tolist() == [4.0, 5.0]
    with pytest.raises(ValueError, match="drop_oldest"):
        cache.drop_oldest(3)


def test_cache_check_room_names_the_fix() -> None:
    cache = filled_cache(max_len=8)
    cache.check_room(2)
    with pytest.raises(ValueError, match="drop_oldest"):
        cache.check_room(3)


def test_attention_dropout_is_its_own_setting() -> None:
    # attention-probability dropout forces torch's O(T²) math path on CPU, so it is separate
    block = make_block(block_cfg(dropout=0.2, attn_dropout=0.0))
    assert block.attn.dropout == 0.0 and block.dropout == 0.2
    assert make_block(block_cfg(attn_dropout=0.3)).attn.dropout == 0.3
