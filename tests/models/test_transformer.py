"""MusicTransformer: shapes, loss, KV-cached decoding, cache reorder/drop, tying, prefix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aurl.config import ModelConfig
from aurl.models import (
    KVCache,
    ModelOutput,
    MusicTransformer,
    build_model,
    estimate_flops_per_token,
    num_parameters,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from 2 threads; on a loaded machine the hand-off costs 3-4x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


KINDS = ("full", "sliding_window", "hierarchical")


def tiny(**kw) -> ModelConfig:
    base = {
        "vocab_size": 37, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64,
        "max_seq_len": 64, "dropout": 0.0, "window": 8, "global_stride": 4,
    }  # fmt: skip
    return ModelConfig(**(base | kw))


def make(seed: int = 0, **kw) -> MusicTransformer:
    torch.manual_seed(seed)
    return build_model(tiny(**kw)).eval()


def tokens(batch: int, length: int, seed: int = 1, vocab: int = 37) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=g)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", ["rope", "learned"])
def test_forward_backward_shapes_and_every_parameter_gets_a_gradient(
    kind: str, position: str
) -> None:

    model = make(attention=kind, position=position).train()
    x = tokens(2, 30)
    out = model(x, x)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 30, 37)
    assert out.hidden.shape == (2, 30, 32)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


def test_initial_loss_is_near_uniform_log_vocab() -> None:
    # tied logits = LayerNorm(h) · E: their std is init_std * sqrt(d_model). GPT-2's 0.02 at d 32
    # gives ~0.11 (loss ≈ ln V); the default small init sqrt(2 / (5 d)) gives sqrt(2/5) ≈ 0.63 at
    # any width, which adds about var / 2 ≈ 0.2 nats to ln V, still far below a collapsed softmax.
    log_v = torch.log(torch.tensor(37.0)).item()
    x, y = tokens(4, 32), tokens(4, 32, seed=2)
    assert abs(make(init_std=0.02)(x, y).loss.item() - log_v) < 0.1
    default = make()
    assert default.tok_emb.weight.std().item() == pytest.approx((2 / (5 * 32)) ** 0.5, rel=0.05)
    assert 0.05 < default(x, y).loss.item() - log_v < 0.4


def test_loss_equals_manual_cross_entropy_ignoring_pad() -> None:
    model = make()
    x = tokens(2, 20)
    y = tokens(2, 20, seed=3)
    y[0, :5] = 0  # PAD targets
    y[1, -3:] = 0
    out = model(x, y)
    logp = out.logits.log_softmax(-1)
    keep = y != 0
    manual = -logp.gather(-1, y[..., None])[..., 0][keep].sum() / keep.sum()
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-6)
    # without ignore_index the PAD targets would count: the two losses differ
    assert F.cross_entropy(out.logits.reshape(-1, 37), y.reshape(-1)).item() != pytest.approx(
        out.loss.item()
    )


def test_logits_for_last_matches_all_and_none_skips_projection() -> None:
    model = make()
    x = tokens(3, 12)
    full = model(x).logits
    last = model(x, logits_for="last").logits
    assert last.shape == (3, 1, 37)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    assert model(x, logits_for="none").logits is None
    with pytest.raises(ValueError, match="logits_for"):
        model(x, x, logits_for="last")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", ["rope", "learned"])
def test_kv_cached_decoding_equals_uncached(kind: str, position: str) -> None:
    model = make(attention=kind, position=position)
    x = tokens(2, 40)
    with torch.no_grad():
        reference = model(x).logits  # (2, 40, V)
        cache = model.new_cache(2, 64)
        steps = [model(x[:, :7], cache=cache).logits]  # prefill 7, then chunks of 1 and 3
        t = 7
        while t < 40:
            n = 1 if t < 30 else 3
            steps.append(model(x[:, t : t + n], cache=cache).logits)
            t += n
    cached = torch.cat(steps, dim=1)
    assert cache.length == 40 and cache.position == 40
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=0)


def test_cache_reorder_follows_beam_indices() -> None:
    model = make()
    x = tokens(3, 10)
    nxt = tokens(3, 1, seed=5)
    with torch.no_grad():
        cache = model.new_cache(3)
        model(x, cache=cache)
        order = torch.tensor([2, 2, 0])
        cache.reorder(order)
        got = model(nxt, cache=cache).logits[:, -1]
        want = model(torch.cat([x[order], nxt], dim=1)).logits[:, -1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_drop_oldest_decode_equals_uncached_attention_over_the_same_window() -> None:
    # one layer, rope: keys are stored rotated, so attention over the kept keys at their true
    # positions is exactly the model run from scratch on those tokens (positions are relative).
    model = make(n_layers=1, max_seq_len=16)
    x = tokens(2, 40)
    cap = 16
    with torch.no_grad():
        cache = model.new_cache(2, cap)
        model(x[:, :cap], cache=cache)
        for t in range(cap, 40):
            if cache.length == cap:
                cache.drop_oldest(5)
            kept = cache.length
            got = model(x[:, t : t + 1], cache=cache).logits[:, -1]
            want = model(x[:, t - kept : t + 1]).logits[:, -1]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert cache.position == 40 and cache.offset == 40 - cache.length


def test_rolling_cache_decode_equals_uncached_sliding_window_model() -> None:
    # several layers: keeping the last W-1 keys per step makes every layer of every query see
    # exactly its last W keys, which is the sliding_window kind run uncached on the whole sequence.
    W = 8
    model = make(n_layers=3, attention="full", max_seq_len=16)
    windowed = make(n_layers=3, attention="sliding_window", window=W, max_seq_len=16)
    windowed.load_state_dict(model.state_dict())
    x = tokens(2, 30)
    with torch.no_grad():
        want = windowed(x).logits
        cache = model.new_cache(2, W)
        got = [model(x[:, : W - 1], cache=cache).logits]
        for t in range(W - 1, 30):
            if cache.length == W:
                cache.drop_oldest(1)  # keep W - 1 keys; the new query is the W-th
            got.append(model(x[:, t : t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(got, dim=1), want, atol=1e-5, rtol=0)


def test_full_cache_raises_before_writing() -> None:
    model = make()
    cache = model.new_cache(1, 8)
    model(tokens(1, 6), cache=cache)
    with pytest.raises(ValueError, match="KV cache is full"):
        model(tokens(1, 3), cache=cache)
    assert cache.length == 6


def test_learned_positions_refuse_to_run_past_max_seq_len() -> None:
    model = make(position="learned", max_seq_len=16)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(tokens(1, 17))


def test_weight_tying_shares_storage_and_untied_does_not() -> None:
    tied = make(tie_weights=True)
    assert tied.lm_head.weight.data_ptr() == tied.tok_emb.weight.data_ptr()
    untied = make(tie_weights=False)
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    assert num_parameters(untied) - num_parameters(tied) == 37 * 32


def test_num_parameters_counts_by_hand() -> None:
    model = make(norm="layernorm", mlp="gelu")
    C, F_, V, L = 32, 64, 37, 2
    per_layer = 4 * C * C + 2 * C * F_ + 2 * C  # attention, mlp, two norm weights
    assert num_parameters(model) == V * C + L * per_layer + C


def test_prefix_changes_outputs_and_returns_only_token_positions() -> None:
    model = make()
    x = tokens(2, 10)
    g = torch.Generator().manual_seed(7)
    prefix = torch.randn(2, 3, 32, generator=g)
    plain = model(x)
    cond = model(x, x, prefix=prefix)
    assert cond.logits.shape == (2, 10, 37) and cond.hidden.shape == (2, 10, 32)
    assert (cond.logits - plain.logits).abs().max() > 1e-3
    with pytest.raises(ValueError, match="prefix must be"):
        model(x, prefix=torch.zeros(2, 3, 31))


def test_prefix_then_cached_decoding_equals_uncached() -> None:
    model = make()
    x = tokens(1, 12)
    prefix = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(x, prefix=prefix).logits
        cache = model.new_cache(1)
        first = model(x[:, :5], cache=cache, prefix=prefix).logits
        rest = [model(x[:, t : t + 1], cache=cache).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), reference, atol=1e-5, rtol=0)


def test_left_padded_batch_decodes_like_unpadded_rows() -> None:
    # a padding mask stored in the cache hides PAD keys; with rope, left padding shifts absolute
    # positions but not relative ones, so the padded row equals the same row run alone.
    model = make()
    short = tokens(1, 5)
    long_ = tokens(1, 8, seed=4)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long_])
    mask = batch != 0
    with torch.no_grad():
        cache = model.new_cache(2)
        got = model(batch, cache=cache, key_mask=mask, logits_for="last").logits[0, -1]
        want = model(short).logits[0, -1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_bad_inputs_raise_value_errors() -> None:
    model = make()
    with pytest.raises(ValueError, match="long tensor"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(tiny(vocab_size=0))
    with pytest.raises(ValueError, match="batch"):
        model(tokens(2, 3), cache=model.new_cache(3))


def test_new_cache_has_model_shape() -> None:
    cache = make().new_cache(3, 20)
    assert isinstance(cache, KVCache)
    assert cache.keys.shape == (2, 3, 4, 20, 8)
    assert cache.max_len == 20 and cache.position == 0


def test_flops_per_token_counts_matmuls_and_attention() -> None:
    cfg = tiny(vocab_size=100, d_model=64, n_layers=3, d_ff=256)
    n = 3 * (4 * 64 * 64 + 2 * 64 * 256) + 100 * 64
    assert estimate_flops_per_token(cfg, 64) == pytest.approx(6 * n + 12 * 3 * 64 * 32.5)
    # a window shorter than the context attends to fewer keys
    windowed = tiny(vocab_size=100, d_model=64, n_layers=3, d_ff=256, attention="sliding_window")
    assert estimate_flops_per_token(windowed, 64) < estimate_flops_per_token(cfg, 64)


def test_bfloat16_model_decodes_with_cache_close_to_uncached() -> None:
    model = make().to(torch.bfloat16)
    x = tokens(1, 20)
    with torch.no_grad():
        reference = model(x).logits.float()
        cache = model.new_cache(1)
        assert cache.keys.dtype == torch.bfloat16
        steps = [model(x[:, :10], cache=cache).logits]
        steps += [model(x[:, t : t + 1], cache=cache).logits for t in range(10, 20)]
    # bf16 keeps ~3 significant digits; the logits are O(0.1) at init
    torch.testing.assert_close(torch.cat(steps, 1).float(), reference, atol=2e-2, rtol=0)
