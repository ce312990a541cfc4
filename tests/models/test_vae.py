"""MusicVAE: gradients, shapes, cached decoding, latent-space operations, priors, segment cutting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aurl.config import ModelConfig, VAEConfig
from aurl.models.vae import (
    GaussianPrior,
    Latents,
    MixturePrior,
    MusicVAE,
    build_vae,
    cut_segments,
    even_bar_ids,
    gaussian_kl,
    pack_segment,
    slerp,
)

V = 40


def tiny_cfg(**vae) -> ModelConfig:
    v = {"latent_dim": 8, "bar_latent_dim": 4, "bars_per_segment": 3, "encoder_layers": 1, **vae}
    return ModelConfig(
        mode="vae", vocab_size=V, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=96,
        dropout=0.0, vae=VAEConfig(**v),
    )  # fmt: skip


def batch(seed: int = 0, rows: int = 3, length: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(3, V, (rows, length), generator=g)
    tok[:, 0] = 1
    tok[-1, length - 8 :] = 0  # one padded row
    return tok


def test_forward_backward_reaches_encoder_latent_heads_and_decoder():
    torch.manual_seed(0)
    model = build_vae(tiny_cfg())
    out = model(batch(), generator=torch.Generator().manual_seed(1))
    assert out.logits.shape == (3, 29, V)
    assert out.kl_g.shape == (3, 8) and out.kl_b.shape == (3, 3, 4)
    loss = out.recon + out.kl_g.sum(-1).mean() + out.kl_b.sum((1, 2)).mean()
    assert torch.isfinite(loss)
    # an untrained model predicts ~uniformly: cross-entropy near log V
    assert abs(out.recon.item() - math.log(V)) < 0.5
    loss.backward()
    for name in ("encoder_blocks.0.attn.qkv.weight", "to_global.weight", "to_bar.weight",
                 "bar_prior.0.weight", "decoder.blocks.1.mlp.up.weight", "global_to_prefix.weight",
                 "bar_to_prefix.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_encode_shapes_and_padding_does_not_change_the_posterior():
    model = build_vae(tiny_cfg()).eval()
    tok = batch()
    post = model.encode(tok)
    assert post.mu_g.shape == (3, 8) and post.logvar_b.shape == (3, 3, 4)
    # extra PAD columns must not move the posterior (they are masked out of attention and pooling)
    padded = torch.cat([tok, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    post2 = model.encode(padded)
    torch.testing.assert_close(post.mu_g, post2.mu_g, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(post.mu_b, post2.mu_b, atol=1e-5, rtol=1e-4)


def test_cached_greedy_decode_equals_full_recompute():
    torch.manual_seed(0)
    model = build_vae(tiny_cfg()).eval()
    z = model.posterior_mean(model.encode(batch()))
    rows = model.decode(z, 12, bos_id=1, eos_id=None)
    assert [len(r) for r in rows] == [13, 13, 13] and all(r[0] == 1 for r in rows)
    prefix = model.prefix(z)
    ids = torch.ones(3, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(12):
            logits = model.decoder(ids, prefix=prefix).logits[:, -1]
            logits[:, [0, 1]] = float("-inf")  # decode never emits PAD or BOS
            nxt = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    assert ids.tolist() == rows


def test_decode_stops_each_row_at_eos():
    model = build_vae(tiny_cfg()).eval()
    head = torch.nn.Linear(32, V)  # constant logits: EOS (2) first everywhere
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[2] = 1.0
    model.decoder.lm_head = head
    rows = model.decode(model.sample_latents(2, torch.Generator().manual_seed(0)), 10, eos_id=2)
    assert rows == [[1, 2], [1, 2]]


def test_slerp_endpoints_and_constant_norm_between_equal_norm_points():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)
    b = b * a.norm() / b.norm()
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid.norm(), a.norm(), rtol=1e-5, atol=1e-5)
    assert float(((a + b) / 2).norm()) < float(a.norm()) * 0.95  # the straight line sags inside
    # parallel vectors fall back to linear interpolation (no division by sin 0)
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)


def test_interpolate_returns_both_ends_exactly():
    g = torch.Generator().manual_seed(1)
    za = Latents(torch.randn(1, 8, generator=g), torch.randn(1, 3, 4, generator=g))
    zb = Latents(torch.randn(1, 8, generator=g), torch.randn(1, 3, 4, generator=g))
    path = MusicVAE.interpolate(za, zb, 5)
    assert path.z_g.shape == (5, 8) and path.z_b.shape == (5, 3, 4)
    torch.testing.assert_close(path.z_g[0], za.z_g[0])
    torch.testing.assert_close(path.z_g[-1], zb.z_g[0])
    torch.testing.assert_close(path.z_b[-1], zb.z_b[0])
    with pytest.raises(ValueError, match="steps"):
        MusicVAE.interpolate(za, zb, 1)


def test_vary_scales_with_amount():
    model = build_vae(tiny_cfg()).eval()
    z = model.sample_latents(1, torch.Generator().manual_seed(0))
    same = model.vary(z, 0.0, 3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(same.z_g, z.z_g.expand(3, -1))
    small = model.vary(z, 0.1, 200, torch.Generator().manual_seed(2))
    # global prior std is 1: the perturbation std is the amount
    assert abs(float((small.z_g - z.z_g).std()) - 0.1) < 0.01
    with pytest.raises(ValueError, match="amount"):
        model.vary(z, -0.5, 2)


def test_gaussian_kl_known_values():
    z = torch.zeros(1, 1)
    assert float(gaussian_kl(z, z, z, z)) == 0.0
    # KL(N(1, 1) || N(0, 1)) = 1/2; KL(N(0, e^2) || N(0, 1)) = (e^2 - 1 - 2) / 2
    assert float(gaussian_kl(z + 1, z, z, z)) == pytest.approx(0.5)
    assert float(gaussian_kl(z, z + 2, z, z)) == pytest.approx((math.exp(2) - 3) / 2)


def test_mixture_prior_monte_carlo_kl_matches_closed_form_for_one_standard_component():
    prior = MixturePrior(4, 1)
    with torch.no_grad():
        prior.means.zero_()
    g = torch.Generator().manual_seed(0)
    mu = torch.full((20000, 4), 0.7)
    logvar = torch.full((20000, 4), -0.5)
    z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
    mc = prior.kl(mu, logvar, z).sum(-1).mean()
    exact = GaussianPrior(4).kl(mu, logvar, z).sum(-1).mean()
    assert mc.item() == pytest.approx(exact.item(), rel=0.03)


def test_mog_vae_trains_prior_means():
    model = build_vae(tiny_cfg(prior="mog", prior_components=3))
    out = model(batch())
    (out.recon + out.kl_g.sum(-1).mean()).backward()
    assert float(model.prior.means.grad.abs().sum()) > 0
    assert model.sample_latents(5, torch.Generator().manual_seed(0)).z_g.shape == (5, 8)


def test_without_bar_latents_only_the_global_prefix_is_used():
    model = build_vae(tiny_cfg(bar_latent_dim=0)).eval()
    out = model(batch())
    assert out.kl_b is None and out.latents.z_b is None
    assert model.prefix(out.latents).shape == (3, 1, 32)


def test_cut_segments_starts_on_bar_lines_and_drops_specials():
    # 4 beats per bar; token i happens after beats[i]; specials 1 (BOS) and 2 (EOS)
    ids = np.array([1, 10, 11, 12, 13, 14, 15, 2])
    beats = np.array([0, 2, 4, 6, 8, 9, 12, 12], dtype=float)
    # time before each token: 0 0 2 4 6 8 9 12 -> bars 0 0 0 1 1 2 2 3
    segs = cut_segments(ids, beats, bars=2, beats_per_bar=4, stride_bars=1, special={1, 2})
    # windows start wherever a whole window still fits before the last bar with notes (bar 2)
    assert [s[0].tolist() for s in segs] == [[10, 11, 12, 13], [12, 13, 14, 15]]
    assert [s[1].tolist() for s in segs] == [[0, 0, 1, 1], [0, 0, 1, 1]]
    # a piece shorter than one window still gives one (partial) segment
    short = cut_segments(ids[:3], beats[:3], bars=4, beats_per_bar=4, stride_bars=4, special={1, 2})
    assert [s[0].tolist() for s in short] == [[10, 11]]


def test_pack_segment_and_even_bar_ids():
    tokens, bars = pack_segment(np.array([5, 6, 7]), np.array([0, 1, 1]), 2, 7, bos=1, eos=2, pad=0)
    assert tokens.tolist() == [1, 5, 6, 7, 2, 0, 0]
    assert bars.tolist() == [0, 0, 1, 1, 1, -1, -1]
    mask = torch.tensor([[True] * 6 + [False] * 2])
    assert even_bar_ids(mask, 3).tolist() == [[0, 0, 1, 1, 2, 2, -1, -1]]


def test_build_vae_needs_a_vocabulary():
    cfg = tiny_cfg()
    cfg.vocab_size = 0
    with pytest.raises(ValueError, match="vocab_size"):
        build_vae(cfg)


def test_word_dropout_blanks_decoder_inputs_only_in_training():
    tokens = batch()
    torch.manual_seed(0)
    plain = build_vae(tiny_cfg())
    torch.manual_seed(0)
    dropped = build_vae(tiny_cfg(word_dropout=0.5))
    seen = []
    hook = dropped.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    dropped.train()
    dropped(tokens, generator=torch.Generator().manual_seed(1))
    inp = seen[-1]
    real = tokens[:, :-1] != 0
    blanked = (inp == 0) & real
    assert (inp[:, 0] == 1).all()  # BOS is never dropped
    assert 0.3 < blanked.sum() / real.sum() < 0.7
    assert torch.equal(inp[~blanked], tokens[:, :-1][~blanked])
    # evaluation sees every token: same weights, same output as a model without word dropout
    dropped.eval(), plain.eval()
    hook.remove()
    g = torch.Generator().manual_seed(2)
    a = dropped(tokens, generator=g).logits
    b = plain(tokens, generator=torch.Generator().manual_seed(2)).logits
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="word_dropout"):
        VAEConfig(word_dropout=1.0)


def test_posterior_logvar_init_starts_every_posterior_narrow():
    torch.manual_seed(0)
    wide = build_vae(tiny_cfg()).encode(batch())
    torch.manual_seed(0)
    narrow = build_vae(tiny_cfg(posterior_logvar_init=-4.0)).encode(batch())
    assert abs(float(wide.logvar_g.mean())) < 1.0
    assert abs(float(narrow.logvar_g.mean()) + 4.0) < 1.0
    assert abs(float(narrow.logvar_b.mean()) + 4.0) < 1.0
    torch.testing.assert_close(narrow.mu_g, wide.mu_g)  # only the variance halves change
