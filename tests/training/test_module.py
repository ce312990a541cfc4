"""LM objective: schedule, weight-decay groups, anomaly guard (alone and inside a real run)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from aurl.models import build_model
from aurl.training import run
from aurl.training.callbacks import AnomalyGuard, TrainingDivergedError
from aurl.training.module import LMModule, lr_factor, param_groups, split_batch


def test_lr_schedule_warms_up_linearly_then_cosines_to_the_floor():
    f = [lr_factor(s, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for s in range(0, 200)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert f[110] == pytest.approx(0.1) and f[199] == pytest.approx(0.1)
    decay = f[10:]
    assert all(decay[i] >= decay[i + 1] for i in range(len(decay) - 1))


def test_no_weight_decay_on_norms_biases_and_tied_embedding(tokenizer, tiny_config):
    cfg = tiny_config(tokenizer)
    model = build_model(cfg.model)
    decay, keep = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert any(p is model.tok_emb.weight for p in keep["params"])
    n_total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decay, keep) for p in g["params"]) == n_total


def test_split_batch_shifts_windows_by_one():
    w = torch.arange(10).view(2, 5)
    x, y = split_batch(w)
    assert x.tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]] and y.tolist() == [[1, 2, 3, 4], [6, 7, 8, 9]]


def test_guard_skips_nan_and_spikes_and_stops_after_max_bad(caplog):
    g = AnomalyGuard(max_bad_steps=3)
    assert all(g.check(1.0 + 0.01 * i, i) for i in range(25))
    with caplog.at_level(logging.WARNING):
        assert not g.check(math.nan, 25)
    assert "non-finite gradient norm" in caplog.text
    assert g.check(1.1, 26)  # a good step resets the count
    assert not g.check(50.0, 27)  # 50 > 10 x median ~1.1
    assert "spike" in caplog.text
    assert not g.check(math.inf, 28)
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive bad steps.*last\.ckpt"):
        g.check(math.nan, 29)


def test_guard_does_not_judge_spikes_without_history():
    g = AnomalyGuard(max_bad_steps=1)
    assert g.check(1.0, 0) and g.check(1000.0, 1)


class NaNAt(LMModule):
    """Returns a NaN loss at the listed global steps (as a blown-up forward would)."""

    bad_steps: tuple[int, ...] = ()

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.global_step in self.bad_steps else loss


def _fit_with(monkeypatch, tmp_path, tokenizer, tiny_config, windows, bad_steps, *overrides):
    cfg = tiny_config(
        tokenizer, "trainer.val_every_steps=100", "trainer.samples_per_validation=0", *overrides
    )
    seen: dict = {}

    def make(cfg_, vocab):
        m = NaNAt(cfg_, vocab)
        m.bad_steps = bad_steps
        seen["module"] = m
        return m

    monkeypatch.setattr(run, "make_module", make)
    tokenizer.save(tmp_path)
    run.fit(cfg, tmp_path, tokenizer, windows(32), windows(32, length=8))
    return seen["module"]


def test_nan_loss_step_is_skipped_with_a_warning_and_weights_unchanged(
    monkeypatch, tmp_path, tokenizer, tiny_config, windows, caplog
):
    snapshots = {}

    class Snap(NaNAt):
        def on_train_batch_start(self, batch, batch_idx):
            if self.global_step in (5, 6):
                snapshots[self.global_step] = {
                    k: v.clone() for k, v in self.model.state_dict().items()
                }

    monkeypatch.setattr(run, "make_module", lambda c, v: Snap(c, v))
    Snap.bad_steps = (5,)
    cfg = tiny_config(
        tokenizer,
        "trainer.val_every_steps=100",
        "trainer.samples_per_validation=0",
        "trainer.max_steps=8",
    )
    tokenizer.save(tmp_path)
    with caplog.at_level(logging.WARNING):
        run.fit(cfg, tmp_path, tokenizer, windows(32), windows(32, length=8))
    assert "step 5 skipped: non-finite gradient norm" in caplog.text
    for k, v in snapshots[5].items():
        assert torch.equal(v, snapshots[6][k]), f"{k} changed during the skipped step"


def test_repeated_nan_stops_training_with_a_clear_error(
    monkeypatch, tmp_path, tokenizer, tiny_config, windows
):
    with pytest.raises(
        TrainingDivergedError, match=r"training stopped at step 6: 3 consecutive bad steps"
    ):
        _fit_with(
            monkeypatch,
            tmp_path,
            tokenizer,
            tiny_config,
            windows,
            (4, 5, 6, 7, 8),
            "trainer.max_bad_steps=3",
        )
    # the last good checkpoint (step 5: weights as of step 4) survives
    from aurl.training.checkpoint_io import load_plain

    assert load_plain(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 5
