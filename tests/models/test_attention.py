"""Attention kinds: fast paths equal the dense reference, windows, causality, summaries."""

from __future__ import annotations

import pytest
import torch

from aurl.config import ModelConfig
from aurl.models import ATTENTION, build_model
from aurl.models.blocks import FullAttention, HierarchicalAttention, SlidingWindowAttention


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from 2 threads; on a loaded machine the hand-off costs 3-4x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


KINDS = tuple(ATTENTION)


def qkv(batch: int = 2, heads: int = 3, length: int = 37, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, length, dim, generator=g) for _ in range(3))


def padding_mask(batch: int, length: int) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -6:] = False  # right padding in row 0
    mask[1, 3:5] = False  # a hole in row 1
    return mask


def reference(q, k, v, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out, for an explicit (T, S) or (B, 1, T, S) mask."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, T, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def test_registry_names_match_config_choices() -> None:
    from aurl.config import ATTENTION_KINDS

    assert set(ATTENTION) == set(ATTENTION_KINDS)


def test_full_causal_equals_written_out_softmax() -> None:
    q, k, v = qkv()
    T = q.shape[2]
    want = reference(q, k, v, torch.ones(T, T, dtype=torch.bool).tril())
    torch.testing.assert_close(FullAttention()(q, k, v), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [1, 5, 8, 36])
@pytest.mark.parametrize("masked", [False, True])
def test_sliding_window_blocked_equals_written_out_band(window: int, masked: bool) -> None:
    q, k, v = qkv()
    T = q.shape[2]
    kind = SlidingWindowAttention(window=window)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & (j > i - window)  # (T, T)
    key_mask = padding_mask(2, T) if masked else None
    if masked:
        allowed = allowed & key_mask[:, None, None, :]  # (B, 1, T, T)
    got = kind.blocked(q, k, v, key_mask, 0.0)
    want = reference(q, k, v, allowed)
    # compare real query rows (a real query always sees itself; padded rows may be empty)
    real = slice(None) if key_mask is None else key_mask[:, None, :, None].expand_as(got)
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [37, 64, 500])
def test_sliding_window_at_least_the_length_equals_full(window: int) -> None:
    q, k, v = qkv()
    full = FullAttention()(q, k, v)
    kind = SlidingWindowAttention(window=window)
    torch.testing.assert_close(kind(q, k, v), full, atol=1e-6, rtol=0)
    # the blocked path itself (one block, padded) gives the same answer
    torch.testing.assert_close(kind.blocked(q, k, v, None, 0.0), full, atol=1e-5, rtol=0)


def test_sliding_window_model_with_window_over_context_equals_full_model() -> None:
    cfg = {"vocab_size": 30, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "dropout": 0.0}
    torch.manual_seed(0)
    full = build_model(ModelConfig(**cfg)).eval()
    torch.manual_seed(0)
    windowed = build_model(ModelConfig(**cfg, attention="sliding_window", window=64)).eval()
    x = torch.randint(1, 30, (2, 64), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(windowed(x).logits, full(x).logits, atol=1e-6, rtol=0)


def hierarchical_allowed(
    length: int, window: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, T) local mask and (T, G) summary mask written from the definition."""
    T = length
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    local = (j <= i) & (j > i - window)
    G = T // stride
    ends = torch.arange(G) * stride + stride - 1
    glob = ends[None, :] <= i - window  # block ended before the window starts
    return local, glob


@pytest.mark.parametrize(("window", "stride"), [(4, 4), (5, 3), (8, 2), (3, 8)])
def test_hierarchical_blocked_and_dense_equal_written_out_summaries(
    window: int, stride: int
) -> None:

    q, k, v = qkv()
    T = q.shape[2]
    local, glob = hierarchical_allowed(T, window, stride)
    G = glob.shape[1]
    ks = k[:, :, : G * stride].reshape(2, 3, G, stride, 8).mean(3)  # (B, H, G, D)
    vs = v[:, :, : G * stride].reshape(2, 3, G, stride, 8).mean(3)
    want = reference(q, torch.cat([k, ks], 2), torch.cat([v, vs], 2), torch.cat([local, glob], 1))
    kind = HierarchicalAttention(window=window, global_stride=stride)
    torch.testing.assert_close(kind(q, k, v), want, atol=1e-5, rtol=0)  # blocked path
    torch.testing.assert_close(kind.dense(q, k, v, 0, 0, True, None, 0.0), want, atol=1e-5, rtol=0)
    assert glob.any(), "the case must exercise summaries"


def test_hierarchical_summaries_matter_and_window_over_length_equals_full() -> None:
    q, k, v = qkv()
    hier = HierarchicalAttention(window=4, global_stride=4)(q, k, v)
    local = SlidingWindowAttention(window=4)(q, k, v)
    assert (hier - local).abs().max() > 1e-3
    wide = HierarchicalAttention(window=37, global_stride=4)(q, k, v)
    torch.testing.assert_close(wide, FullAttention()(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_blocked_path_with_padding_mask_equals_dense(kind: str) -> None:
    q, k, v = qkv()
    attn = ATTENTION[kind](window=5, global_stride=3)
    key_mask = torch.ones(2, 37, dtype=torch.bool)
    key_mask[0, 10:14] = False
    key_mask[1, 30:] = False
    fast = attn(q, k, v, key_mask=key_mask)
    dense = attn.dense(q, k, v, 0, 0, True, key_mask, 0.0)
    keep = key_mask[:, None, :, None].expand_as(fast)  # rows of real queries
    torch.testing.assert_close(fast[keep], dense[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_bidirectional_with_padding_ignores_padded_keys(kind: str) -> None:
    q, k, v = qkv()
    attn = ATTENTION[kind](window=6, global_stride=4)
    key_mask = torch.ones(2, 37, dtype=torch.bool)
    key_mask[:, 30:] = False
    out = attn(q, k, v, causal=False, key_mask=key_mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 30:] += 5.0  # change only padded keys/values
    v2[:, :, 30:] -= 3.0
    out2 = attn(q, k2, v2, causal=False, key_mask=key_mask)
    torch.testing.assert_close(out[:, :, :30], out2[:, :, :30], atol=1e-6, rtol=0)
    # and a bidirectional query does see later keys
    later = attn(
        q, k, v + (torch.arange(37) == 20).float()[:, None], causal=False, key_mask=key_mask
    )
    assert (later[:, :, 18] - out[:, :, 18]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_model_is_causal_perturbing_the_future_leaves_the_past(kind: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=30, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0, attention=kind,
        window=6, global_stride=3,
    )  # fmt: skip
    model = build_model(cfg).eval()
    x = torch.randint(1, 30, (2, 48), generator=torch.Generator().manual_seed(1))
    base = model(x).logits
    for t in (0, 7, 20, 40):
        y = x.clone()
        y[:, t + 1 :] = (y[:, t + 1 :] + 11) % 29 + 1  # change every later token
        out = model(y).logits
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
        assert (out[:, t + 1 :] - base[:, t + 1 :]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_attention_dropout_changes_outputs(kind: str) -> None:
    q, k, v = qkv()
    attn = ATTENTION[kind](window=5, global_stride=3)
    torch.manual_seed(0)
    dropped = attn(q, k, v, dropout_p=0.5)
    assert (dropped - attn(q, k, v)).abs().max() > 1e-3


@pytest.mark.parametrize("k_start", [0, 3, 8])
def test_hierarchical_single_query_decode_equals_dense_at_any_offset(k_start: int) -> None:
    # after drop_oldest the cache starts mid-block; the one-query path must still agree
    q, k, v = qkv(length=30)
    kind = HierarchicalAttention(window=5, global_stride=4)
    q_start = k_start + 29  # the newest key is the query's own
    got = kind(q[:, :, -1:], k, v, q_start=q_start, k_start=k_start)
    want = kind.dense(q[:, :, -1:], k, v, q_start, k_start, True, None, 0.0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
