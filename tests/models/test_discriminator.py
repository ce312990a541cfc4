"""Multi-scale discriminator: shapes per scale, spectral norm, relaxed tokens, loss values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aurl.models.discriminator import (
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    r1_penalty,
    relaxed_tokens,
)

V = 20


def onehot(seed: int, rows: int = 2, length: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.one_hot(torch.randint(0, V, (rows, length), generator=g), V).float()


def test_one_score_per_window_at_each_scale():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(V, 16, 2, (4, 16, 256))
    out = disc(onehot(0))
    # windows of 4, 16 and 256 (clamped to the 40 tokens) -> 10, 3 and 1 windows
    assert [tuple(s.shape) for s in out.scores] == [(2, 10), (2, 3), (2, 1)]
    assert len(out.features) == 3 * 2 and out.features[0].shape == (2, 16, 40)


def test_padding_positions_do_not_change_scores():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(V, 16, 2, (8,)).eval()
    x = onehot(1, rows=1, length=16)
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[:, 12:] = False
    noisy = x.clone()
    noisy[:, 12:] = onehot(2, rows=1, length=4)
    a, b = disc(x, mask).scores[0], disc(noisy, mask).scores[0]
    # the first window (tokens 0-7) sees tokens 8-9 through the dilated convolutions but never the
    # masked 12-15, whose activations are zeroed at every layer
    torch.testing.assert_close(a, b)


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(V, 16, 1, (8,))
    for _ in range(30):  # power iteration runs once per training forward
        disc(onehot(0))
    w = disc.embed.weight.detach()
    assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(1.0, abs=0.05)


def test_relaxed_tokens_are_one_hot_forward_and_carry_gradient():
    logits = torch.randn(2, 5, V, requires_grad=True)
    x = relaxed_tokens(logits, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x.detach().sum(-1), torch.ones(2, 5))
    assert set(x.detach().unique().tolist()) == {0.0, 1.0}
    (x * torch.arange(V).float()).sum().backward()
    assert float(logits.grad.abs().sum()) > 0
    again = relaxed_tokens(logits, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)  # seeded
    with pytest.raises(ValueError, match="gumbel_tau"):
        relaxed_tokens(logits, 0.0)


def test_loss_values():
    real, fake = [torch.full((2, 3), 2.0)], [torch.full((2, 3), -2.0)]
    assert float(discriminator_loss(real, fake, "hinge")) == 0.0  # both beyond the margin
    assert float(discriminator_loss(fake, real, "hinge")) == pytest.approx(6.0)
    assert float(generator_loss(fake, "hinge")) == pytest.approx(2.0)
    sp = math.log1p(math.exp(-2.0))
    assert float(discriminator_loss(real, fake, "nsgan")) == pytest.approx(2 * sp)
    assert float(generator_loss(real, "nsgan")) == pytest.approx(sp)
    with pytest.raises(ValueError, match="adv_loss"):
        generator_loss(fake, "wgan")


def test_feature_matching_is_zero_for_equal_means_and_positive_otherwise():
    f = [torch.randn(2, 4, 6)]
    assert float(feature_matching_loss(f, [f[0].flip(0)])) == pytest.approx(0.0, abs=1e-6)
    assert float(feature_matching_loss(f, [f[0] + 1.0])) == pytest.approx(1.0)


def test_r1_penalty_is_positive_and_differentiable():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(V, 16, 1, (8,))
    real = onehot(3).requires_grad_(True)
    r1 = r1_penalty(disc(real).scores, real)
    assert r1.item() > 0
    r1.backward()
    assert float(disc.embed.parametrizations.weight.original.grad.abs().sum()) > 0
