"""Bundles: safetensors round trip (tied weights), run-dir loading, clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from aurl.bundle import load_bundle, save_bundle
from aurl.training.export import export_run


def _logits(model, ids=(1, 5, 9, 13, 40, 7)):
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits


def test_round_trip_gives_the_same_logits_and_keeps_weights_tied(tiny_run, tmp_path):
    a = load_bundle(tiny_run)
    save_bundle(tmp_path / "b", a.model, a.config, a.tokenizer, card="# card\n")
    b = load_bundle(tmp_path / "b")
    assert torch.equal(_logits(a.model), _logits(b.model))
    assert b.model.lm_head.weight is b.model.tok_emb.weight
    assert b.config == a.config and b.tokenizer.hash == a.tokenizer.hash
    assert (tmp_path / "b" / "MODEL_CARD.md").read_text() == "# card\n"
    assert not list((tmp_path / "b").glob(".*tmp"))


def test_float16_storage_halves_the_file_and_loads_back_into_fp32(tiny_run, tmp_path):
    a = load_bundle(tiny_run)
    save_bundle(tmp_path / "f32", a.model, a.config, a.tokenizer)
    save_bundle(tmp_path / "f16", a.model, a.config, a.tokenizer, weights_dtype="float16")
    size32 = (tmp_path / "f32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "f16" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    b = load_bundle(tmp_path / "f16")
    assert b.model.tok_emb.weight.dtype == torch.float32
    assert b.model.lm_head.weight is b.model.tok_emb.weight
    torch.testing.assert_close(_logits(b.model), _logits(a.model), atol=2e-2, rtol=0)
    assert a.model.tok_emb.weight.dtype == torch.float32  # the caller's model is left alone
    with pytest.raises(ValueError, match="weights_dtype"):
        save_bundle(tmp_path / "x", a.model, a.config, a.tokenizer, weights_dtype="int8")


def test_run_dir_without_export_loads_from_the_checkpoint(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    exported = load_bundle(run)  # uses run/model (exported from best.ckpt)
    shutil.rmtree(run / "model")
    from_ckpt = load_bundle(run)  # builds from checkpoints/best.ckpt with weights_only=True
    assert from_ckpt.path.name == "best.ckpt"
    assert torch.equal(_logits(exported.model), _logits(from_ckpt.model))
    out = export_run(run, tmp_path / "last", which="last")
    assert load_bundle(out).config.name == "tiny"


def test_inconsistent_or_missing_bundles_name_the_problem(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a bundle"):
        load_bundle(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run / "model", bad)
    text = (bad / "config.yaml").read_text().replace("d_model: 32", "d_model: 48")
    (bad / "config.yaml").write_text(text)
    with pytest.raises(
        ValueError, match=r"model\.safetensors: weights do not fit .*config\.yaml \(size mismatch"
    ):
        load_bundle(bad)
