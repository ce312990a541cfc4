"""The piano-roll VAE (model.vae.decoder=grid): shapes, the ladder, and that z carries the music."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aurl.config import ModelConfig, VAEConfig
from aurl.data import pianoroll as R
from aurl.models.grid_vae import GridVAE
from aurl.models.vae import build_vae


def _cfg(**vae) -> ModelConfig:
    v = {
        "decoder": "grid", "latent_dim": 8, "bar_latent_dim": 8, "bars_per_segment": 2,
        "encoder_layers": 1, "grid_pitch_low": 48, "grid_pitch_high": 72,
        "posterior_logvar_init": -6.0,
    }  # fmt: skip
    v.update(vae)
    return ModelConfig(
        mode="vae", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=64, dropout=0.0,
        vae=VAEConfig(**v),
    )  # fmt: skip


def _roll(seed: int) -> torch.Tensor:
    spec = R.RollSpec(2, 4, 4, 48, 72)
    rng = np.random.default_rng(seed)
    notes = [
        (t, t + 4, int(p)) for t in range(0, 32, 4) for p in rng.choice(24, 3, replace=False) + 48
    ]
    return torch.from_numpy(R.to_roll(np.asarray(notes), spec))


def test_build_vae_gives_a_grid_vae_with_the_roll_shapes():
    model = build_vae(_cfg())
    assert isinstance(model, GridVAE)
    roll = torch.stack([_roll(0), _roll(1)])
    out = model(roll)
    assert out.logits.shape == (2, 32, 24, 3)
    assert out.kl_g.shape == (2, 8) and out.kl_b.shape == (2, 2, 8)
    cells = model.decode_cells(model.posterior_mean(model.encode(roll)))
    assert cells.shape == (2, 32, 24) and int(cells.max()) <= 2


def test_the_grid_decoder_needs_bar_latents():
    with pytest.raises(ValueError, match="bar_latent_dim"):
        build_vae(_cfg(bar_latent_dim=0))


def test_two_segments_are_told_apart_only_through_z():
    """A tiny grid VAE learns two different segments exactly: the decoder sees nothing of the
    input but the latents, so reconstructing both means z carries them."""
    torch.manual_seed(0)
    model = build_vae(_cfg())
    rolls = torch.stack([_roll(0), _roll(1)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        out = model(rolls)
        loss = out.recon + 0.01 * (out.kl_g.sum(-1) + out.kl_b.sum((1, 2))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    z = model.posterior_mean(model.encode(rolls))
    assert torch.equal(model.decode_cells(z), rolls)
    swapped = type(z)(z.z_g.flip(0), z.z_b.flip(0))
    assert torch.equal(model.decode_cells(swapped), rolls.flip(0))  # the latents hold the music


def test_the_fitted_sampler_draws_from_the_training_posteriors_not_the_prior():
    from aurl.models.vae import Latents

    torch.manual_seed(0)
    model = build_vae(_cfg())  # global 8, bars 2 x 8
    gen = torch.Generator().manual_seed(0)
    # "training posteriors": far from the prior (mean 3) and with the bars tied to the global
    z_g = 3.0 + 0.5 * torch.randn(4000, 8, generator=gen)
    z_b = (z_g[:, None, :] * 0.8 + 0.1 * torch.randn(4000, 2, 8, generator=gen)).contiguous()
    prior = model.sample_latents(2000, torch.Generator().manual_seed(1))
    assert abs(float(prior.z_g.mean())) < 0.2
    model.fit_sampler(Latents(z_g, z_b))
    got = model.sample_latents(4000, torch.Generator().manual_seed(1))
    assert got.z_g.shape == (4000, 8) and got.z_b.shape == (4000, 2, 8)
    torch.testing.assert_close(got.z_g.mean(0), torch.full((8,), 3.0), atol=0.05, rtol=0)
    torch.testing.assert_close(got.z_g.std(0), torch.full((8,), 0.5), atol=0.05, rtol=0)
    # the bars follow their global latent (the linear-Gaussian conditional), per row
    fixed = torch.full((500, 8), 2.0)
    bars = model.bar_latents(fixed, torch.Generator().manual_seed(2))
    torch.testing.assert_close(bars.mean(0), torch.full((2, 8), 1.6), atol=0.03, rtol=0)
    assert float(bars.std(0).mean()) == pytest.approx(0.1, abs=0.02)
    with pytest.raises(ValueError, match="more than"):
        model.fit_sampler(Latents(z_g[:10], z_b[:10]))
