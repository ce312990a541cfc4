"""trainer.eval_samples: the validation callback logs the mean overlap area of fresh samples."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from aurl.config import RunConfig, TrainerConfig
from aurl.data.dataset import PreparedData
from aurl.training.callbacks import SampleQuality


class _Module:
    """Stands in for a LightningModule: 'samples' are the prepared train pieces, in turn."""

    def __init__(self, pieces):
        self.pieces, self.k, self.logged = pieces, 0, {}

    def sample_ids(self, generator, num_tokens):
        ids = self.pieces[self.k % len(self.pieces)][:num_tokens]
        self.k += 1
        return ids

    def log(self, name, value, **kwargs):
        self.logged[name] = value


def test_callback_logs_overlap_of_decoded_samples(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("AURL_CACHE", str(tmp_path / "cache"))
    data = PreparedData(tiny_data)
    train = data.split("train")
    module = _Module([train.piece(i).tolist() for i in range(len(train))])
    cb = SampleQuality(tiny_data, data.tokenizer, num_samples=4, num_tokens=100_000, seed=0)
    trainer = SimpleNamespace(sanity_checking=False, global_step=10)
    cb.on_validation_epoch_end(trainer, module)
    # the val split has 1 piece, so the reference falls back to train; the samples are the two
    # train pieces (decoded) twice each: the same figure as the runner gives on those pieces
    from aurl.evaluation.features import piece_from_score
    from aurl.evaluation.samples import (
        compare_tables,
        feature_table,
        reference_table,
        registered_features,
    )

    specs = registered_features()
    decoded = [piece_from_score(data.tokenizer.decode(module.pieces[k % 2])) for k in range(4)]
    ref, _ = reference_table(tiny_data, "train", list(specs))
    expected = compare_tables(feature_table(decoded, list(specs)), ref, specs)
    overlap = module.logged["val/mean_overlap_area"]
    assert math.isfinite(overlap)
    assert overlap == pytest.approx(expected["mean_overlap_area"])
    assert expected["mean_overlap_area"] > 0.3  # samples equal to the reference pieces
    assert math.isfinite(module.logged["val/frechet_distance"])
    assert len(list((tmp_path / "cache" / "eval").glob("*.npz"))) >= 1


def test_callback_logs_nothing_when_samples_do_not_decode(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("AURL_CACHE", str(tmp_path / "cache"))
    data = PreparedData(tiny_data)
    module = _Module([[data.tokenizer.bos_id, data.tokenizer.eos_id]])  # no notes
    cb = SampleQuality(tiny_data, data.tokenizer, num_samples=3, num_tokens=64, seed=0)
    cb.on_validation_epoch_end(SimpleNamespace(sanity_checking=False, global_step=1), module)
    assert module.logged == {}


def test_build_trainer_adds_the_callback_only_when_asked(tmp_path, tiny_data):
    from aurl.training.run import build_trainer

    tok = PreparedData(tiny_data).tokenizer
    for n, expected in ((0, 0), (3, 1)):
        cfg = RunConfig()
        cfg.data.path = str(tiny_data)
        cfg.trainer.eval_samples = n
        cfg.trainer.accelerator = "cpu"
        trainer = build_trainer(cfg, tmp_path / f"run{n}", tok)
        found = [c for c in trainer.callbacks if isinstance(c, SampleQuality)]
        assert len(found) == expected


def test_eval_samples_of_one_is_rejected():
    with pytest.raises(ValueError, match="eval_samples"):
        TrainerConfig(eval_samples=1)


def test_batched_sampler_follows_the_model_and_cuts_each_row_after_eos():
    import torch

    from aurl.training.callbacks import sample_tokens_batch

    class Counter(torch.nn.Module):
        """Puts all probability on (last token + 1) mod 8: from BOS=1 the rows read 1 2 3 ..."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # (B, T) -> logits (B, T, 8)
            logits = torch.full((*x.shape, 8), -1e9)
            logits.scatter_(2, ((x + 1) % 8).unsqueeze(-1), 0.0)
            return SimpleNamespace(logits=logits)

    gen = torch.Generator().manual_seed(0)
    rows = sample_tokens_batch(Counter(), 1, 10, gen, 3, eos_id=5, max_context=4)
    assert rows == [[1, 2, 3, 4, 5]] * 3
    rows = sample_tokens_batch(Counter(), 1, 3, gen, 2, eos_id=None)
    assert rows == [[1, 2, 3, 4]] * 2


def test_batched_sampler_with_kv_cache_matches_full_recompute():
    import torch

    from aurl.config import ModelConfig
    from aurl.models import build_model
    from aurl.training.callbacks import sample_tokens_batch

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64)
    model = build_model(cfg)
    cached = sample_tokens_batch(model, 1, 30, torch.Generator().manual_seed(3), 3, max_context=64)
    full = sample_tokens_batch(model, 1, 30, torch.Generator().manual_seed(3), 3, max_context=20)
    assert len(cached) == 3 and all(len(r) == 31 for r in cached)
    # max_context=20 < 31 tokens: the recompute path, whose first 20 positions see the same context
    assert [r[:21] for r in cached] == [r[:21] for r in full]
