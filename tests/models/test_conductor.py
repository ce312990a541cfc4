"""The conductor decoder: bar rows, the per-bar attention limit, the bag-of-notes loss, decoding."""

from __future__ import annotations

import math

import pytest
import torch

from aurl.config import ModelConfig, VAEConfig
from aurl.models.conductor import bag_of_notes_nll, bar_rows
from aurl.models.vae import Latents, build_vae

V = 40


def tiny_cfg(**vae) -> ModelConfig:
    v = {
        "latent_dim": 8, "bar_latent_dim": 4, "bars_per_segment": 3, "encoder_layers": 1,
        "decoder": "conductor", **vae,
    }  # fmt: skip
    return ModelConfig(
        mode="vae", vocab_size=V, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=96,
        dropout=0.0, vae=VAEConfig(**v),
    )  # fmt: skip


def segment() -> tuple[torch.Tensor, torch.Tensor]:
    """Two segments: BOS, 3 bars of tokens, EOS, PAD; bar index per token (-1 on PAD)."""
    tokens = torch.tensor(
        [[1, 10, 11, 12, 20, 21, 30, 31, 32, 33, 2, 0],
         [1, 13, 14, 22, 23, 24, 25, 34, 2, 0, 0, 0]]
    )  # fmt: skip
    bars = torch.tensor(
        [[0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, -1],
         [0, 0, 0, 1, 1, 1, 1, 2, 2, -1, -1, -1]]
    )  # fmt: skip
    return tokens, bars


def test_bar_rows_split_each_segment_into_bos_bar_eos_rows():
    tokens, bars = segment()
    rows = bar_rows(tokens, bars, 3, bos=1, eos=2)
    assert rows.shape == (2, 3, 6)  # longest bar has 4 tokens, + BOS + EOS
    assert rows[0].tolist() == [
        [1, 10, 11, 12, 2, 0], [1, 20, 21, 2, 0, 0], [1, 30, 31, 32, 33, 2],
    ]  # fmt: skip
    assert rows[1].tolist() == [
        [1, 13, 14, 2, 0, 0], [1, 22, 23, 24, 25, 2], [1, 34, 2, 0, 0, 0],
    ]  # fmt: skip


def test_bar_rows_keep_an_empty_bar_as_bos_eos():
    tokens = torch.tensor([[1, 10, 11, 30, 2]])
    bars = torch.tensor([[0, 0, 0, 2, 2]])
    rows = bar_rows(tokens, bars, 3, bos=1, eos=2)
    assert rows[0, 1].tolist()[:2] == [1, 2]


def test_conductor_forward_shapes_and_gradients_reach_latents_and_bow_head():
    torch.manual_seed(0)
    model = build_vae(tiny_cfg())
    tokens, bars = segment()
    out = model(tokens, tokens != 0, bars, generator=torch.Generator().manual_seed(1))
    assert out.logits.shape == (6, 5, V) and out.targets.shape == (6, 5)
    assert out.kl_g.shape == (2, 8) and out.kl_b.shape == (2, 3, 4)
    assert abs(out.recon.item() - math.log(V)) < 0.5  # untrained: ~uniform
    assert abs(out.bow.item() - math.log(V)) < 0.5
    (out.recon + out.bow + out.kl_g.sum() + out.kl_b.sum()).backward()
    params = dict(model.named_parameters())
    for name in ("to_global.weight", "to_bar.weight", "conductor.net.0.weight",
                 "conductor.bow_head.weight", "decoder.blocks.1.mlp.up.weight",
                 "encoder_blocks.0.attn.qkv.weight"):  # fmt: skip
        assert params[name].grad is not None and float(params[name].grad.abs().sum()) > 0, name


def test_a_bar_logits_do_not_change_when_an_earlier_bar_changes():
    """The attention limit: with the latents fixed, bar 2's predictions depend on bar 2 only."""
    torch.manual_seed(0)
    model = build_vae(tiny_cfg()).eval()
    tokens, bars = segment()
    z = Latents(torch.randn(2, 8), torch.randn(2, 3, 4))
    logits = model.teacher_forced(tokens, z, bars)[0]
    changed = tokens.clone()
    changed[0, 1:4] = torch.tensor([15, 16, 17])  # bar 0 of segment 0, same length
    logits2 = model.teacher_forced(changed, z, bars)[0]
    # rows: segment-major, bar-minor; segment 0's bar 0 is row 0
    assert not torch.allclose(logits[0], logits2[0])
    torch.testing.assert_close(logits[1:], logits2[1:])
    # and the flat decoder, which reads earlier tokens, does not have that property
    flat = build_vae(tiny_cfg(decoder="flat")).eval()
    a = flat.teacher_forced(tokens, z, bars)[0]
    b = flat.teacher_forced(changed, z, bars)[0]
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_a_bar_reads_its_own_latent_not_the_others():
    torch.manual_seed(0)
    model = build_vae(tiny_cfg()).eval()
    tokens, bars = segment()
    z = Latents(torch.randn(2, 8), torch.randn(2, 3, 4))
    logits = model.teacher_forced(tokens, z, bars)[0]
    z2 = Latents(z.z_g.clone(), z.z_b.clone())
    z2.z_b[0, 2] += 1.0  # move bar 2's latent of segment 0
    logits2 = model.teacher_forced(tokens, z2, bars)[0]
    torch.testing.assert_close(logits[:2], logits2[:2])
    assert not torch.allclose(logits[2], logits2[2])


def test_bag_of_notes_nll_is_the_multiset_cross_entropy():
    rows = torch.tensor([[[1, 5, 5, 7, 2, 0]]])  # one bar: tokens 5, 5, 7
    logits = torch.zeros(1, 1, 10)
    logits[0, 0, 5] = math.log(2.0)  # p(5) = 2/11, p(7) = 1/11
    got = bag_of_notes_nll(logits, rows, (0, 1, 2))
    want = -(2 * math.log(2 / 11) + math.log(1 / 11)) / 3
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_conductor_decode_joins_one_row_per_bar():
    torch.manual_seed(0)
    model = build_vae(tiny_cfg()).eval()
    z = model.sample_latents(2, torch.Generator().manual_seed(0))
    rows = model.decode(z, 5, bos_id=1, eos_id=2)
    assert len(rows) == 2
    for row in rows:
        assert row[0] == 1 and row[-1] == 2 and 2 not in row[1:-1]
        assert len(row) <= 2 + 3 * 5  # at most max_tokens per bar


def test_config_rejects_an_unknown_decoder():
    with pytest.raises(ValueError, match=r"model\.vae\.decoder"):
        VAEConfig(decoder="lstm")


def test_conductor_reconstructs_random_bars_through_the_latents():
    """Random bars have nothing to predict them but z (each bar row starts from an empty context):
    after a short fit, greedy decoding from the posterior means gives the bars back."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n, K, per_bar = 8, 2, 5
    bodies = torch.randint(3, V, (n, K * per_bar), generator=g)
    tokens = torch.cat([torch.ones(n, 1, dtype=torch.long), bodies, torch.full((n, 1), 2)], 1)
    bars = torch.cat(
        [torch.zeros(n, 1), torch.arange(K).repeat_interleave(per_bar).expand(n, -1),
         torch.full((n, 1), K - 1)], 1,
    ).long()  # fmt: skip
    model = build_vae(tiny_cfg(bars_per_segment=K, latent_dim=16, bar_latent_dim=8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is ~50x faster on a loaded machine
    try:
        for _ in range(60):  # 40 steps reached 100 % on this seed (1 s)
            out = model(tokens, tokens != 0, bars, generator=g)
            loss = out.recon + out.bow + 1e-3 * (out.kl_g.sum(-1) + out.kl_b.sum((1, 2))).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    z = model.posterior_mean(model.encode(tokens, tokens != 0, bars))
    rows = model.decode(z, per_bar + 1, bos_id=1, eos_id=2)
    hits = sum(
        a == b
        for row, ref in zip(rows, bodies.tolist(), strict=True)
        for a, b in zip(row[1:-1], ref, strict=False)
    )
    assert hits / bodies.numel() >= 0.9


def test_bar_positions_count_from_zero_in_every_bar():
    from aurl.models.vae import bar_positions

    ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1, -1, -1]])
    assert bar_positions(ids, 2).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 0]]


def test_encoder_bar_positions_reach_the_bar_posterior():
    torch.manual_seed(0)
    model = build_vae(tiny_cfg(encoder_bar_positions=True)).eval()
    assert model.enc_bar_pos is not None
    tokens, bar_ids = segment()
    with torch.no_grad():
        before = model.encode(tokens, tokens != 0, bar_ids).mu_b.clone()
        model.enc_bar_pos.weight.zero_()
        after = model.encode(tokens, tokens != 0, bar_ids).mu_b
    assert not torch.allclose(before, after, atol=1e-4)
    assert build_vae(tiny_cfg()).enc_bar_pos is None  # off by default: old models load unchanged
