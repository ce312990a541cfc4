"""End to end on CPU with the grid (piano-roll) decoder: a tiny VAE trained a few steps through
Lightning, driven through ``aurl interpolate`` / ``vary`` / ``sample`` and the evaluation metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from aurl import cli
from aurl.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TokenizerConfig,
    TrainerConfig,
    VAEConfig,
)

MIDI = Path(__file__).resolve().parent / "data" / "midi"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from aurl.bundle import save_bundle
    from aurl.data.midi_io import load_score
    from aurl.data.tokenizers import MusicTokenizer
    from aurl.training.grid_data import RollDataset
    from aurl.training.vae_module import VAEModule

    tok = MusicTokenizer(TokenizerConfig())
    cfg = RunConfig(
        data=DataConfig(seq_len=64),
        model=ModelConfig(
            mode="vae", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64,
            max_seq_len=64, dropout=0.0,
            vae=VAEConfig(latent_dim=8, bar_latent_dim=8, bars_per_segment=2, encoder_layers=1,
                          decoder="grid", posterior_logvar_init=-6.0, grid_transpose=2),
        ),
        optim=OptimConfig(batch_size=8, warmup_steps=0, lr=1e-2),
        trainer=TrainerConfig(max_steps=40, seed=0),
    )  # fmt: skip
    torch.manual_seed(0)
    module = VAEModule(cfg, tok.vocab_size)
    pieces = [np.asarray(tok.encode(load_score(MIDI / "etude_no4.mid")[0]), dtype=np.int64)]
    ds = RollDataset(pieces, tok, cfg.model.vae, stride_bars=1, augment=True)
    trainer = pl.Trainer(
        max_steps=40, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(ds, batch_size=8))
    out = tmp_path_factory.mktemp("vae_grid") / "model"
    save_bundle(out, module.model, module.cfg, tok)
    return out, pieces


def test_roll_dataset_items_are_reproducible_and_stay_in_range(trained):
    from aurl.bundle import load_bundle
    from aurl.training.grid_data import RollDataset

    bundle = load_bundle(trained[0])
    v = bundle.model.cfg.vae
    a = RollDataset(trained[1], bundle.tokenizer, v, stride_bars=1, seed=3, augment=True)
    b = RollDataset(trained[1], bundle.tokenizer, v, stride_bars=1, seed=3, augment=True)
    assert len(a) > 4
    for i in (0, 5, len(a) + 2):
        assert torch.equal(a[i]["roll"], b[i]["roll"])
        assert a[i]["roll"].shape == (32, v.grid_pitch_high - v.grid_pitch_low)
        assert int((a[i]["roll"] == 1).sum()) > 0


def test_grid_segments_decode_and_fill_exactly_their_bars(trained):
    from aurl.bundle import load_bundle
    from aurl.generation import constraints as C
    from aurl.generation import latent

    bundle = load_bundle(trained[0])
    tok, v = bundle.tokenizer, bundle.model.cfg.vae
    vocab = C.Vocab.from_tokenizer(tok)
    z = bundle.model.sample_latents(3, torch.Generator().manual_seed(3))
    for temperature in (0.0, 1.0):
        for row in latent.decode_rows(bundle, z, temperature, 1.0, seed=0):
            ids = [tok.bos_id, *row, tok.eos_id]
            assert float(tok.token_beats(ids)[-1]) == pytest.approx(
                v.bars_per_segment * v.beats_per_bar
            )
            state = C.replay(ids, vocab)
            assert not state.sounding


def test_interpolate_vary_and_sample_through_the_cli_with_the_grid(trained, tmp_path):
    model = trained[0]
    a, b = MIDI / "etude_no4.mid", MIDI / "pop909_008.mid"
    rc = cli.main(["interpolate", str(a), str(b), "--model", str(model), "--out",
                   str(tmp_path / "i"), "--steps", "3", "--bars", "4", "--no-wav"])  # fmt: skip
    assert rc == 0
    blob = json.loads((tmp_path / "i" / "samples.json").read_text())
    assert len(blob["pieces"]) == 3 and all(p["beats"] == pytest.approx(16) for p in blob["pieces"])
    rc = cli.main(["vary", str(a), "--model", str(model), "--out", str(tmp_path / "v"),
                   "--num", "2", "--amount", "0.5", "--no-wav"])  # fmt: skip
    assert rc == 0 and (tmp_path / "v" / "piece_01.mid").is_file()
    rc = cli.main(["sample", "--model", str(model), "--out", str(tmp_path / "s"), "--num", "2",
                   "--bars", "4", "--no-wav"])  # fmt: skip
    assert rc == 0
    blob = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert blob["settings"]["temperature"] == 0.0  # the grid decodes its most likely cells


def test_grid_metrics_report_the_keys_evaluate_promises(trained, prepared_stub):
    from aurl.bundle import load_bundle
    from aurl.training.vae_metrics import vae_metrics

    bundle = load_bundle(trained[0])
    got = vae_metrics(bundle, prepared_stub(bundle.tokenizer, trained[1]), "test")
    assert got["decoder"] == "grid" and got["segments"] > 2
    assert 0.0 <= got["recon_note_f1"] <= 1.0
    kl = got["kl_per_segment"]
    assert kl["total"] == pytest.approx(kl["global"] + kl["bar"]) and kl["global"] > 0
    assert got["bits_per_note"] > 0 and math.isfinite(got["z_usage_nats_per_segment"])
    assert 0 <= got["active_units_vs_noise_bar"] <= 8


def test_vae_gan_on_the_grid_updates_both_players_on_roll_rows(trained):
    """model.mode=vae_gan with the grid: the discriminator reads a step's P x 3 cells as one row."""
    import dataclasses

    from aurl.bundle import load_bundle
    from aurl.training.grid_data import RollDataset
    from aurl.training.vae_module import VAEModule

    bundle = load_bundle(trained[0])
    tok = bundle.tokenizer
    m = bundle.config.model
    vae = dataclasses.replace(
        m.vae, disc_windows=(8, 32), disc_layers=1, gan_warmup_steps=0, r1_weight=1.0
    )
    cfg = RunConfig(
        data=DataConfig(seq_len=64),
        model=dataclasses.replace(m, mode="vae_gan", vae=vae),
        optim=OptimConfig(batch_size=4, warmup_steps=0),
        trainer=TrainerConfig(max_steps=3, seed=0),
    )
    torch.manual_seed(0)
    module = VAEModule(cfg, tok.vocab_size)
    assert module.discriminator.embed.weight.shape[1] == module.model.pitches * 3
    d_before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    head_before = module.model.head.weight.clone()
    ds = RollDataset(trained[1], tok, vae, stride_bars=1)
    trainer = pl.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(ds, batch_size=4))
    assert trainer.global_step == 3
    logged = trainer.logged_metrics
    for name in ("train/adv_g", "train/adv_d", "train/fm", "train/r1", "train/recon"):
        assert name in logged and math.isfinite(float(logged[name])), name
    assert any(
        not torch.equal(v, d_before[k]) for k, v in module.discriminator.state_dict().items()
    )
    assert not torch.equal(head_before, module.model.head.weight)


def test_export_fits_the_sampler_and_the_bundle_keeps_it(trained, tmp_path, prepared_stub):
    """A bundle written with a fitted sampler loads it back; `aurl sample` then draws from it."""
    from aurl.bundle import SAMPLER_FILE, load_bundle, save_bundle
    from aurl.training.grid_data import posterior_means

    bundle = load_bundle(trained[0])
    model = bundle.model
    assert model.sampler is None and not (trained[0] / SAMPLER_FILE).exists()
    means = posterior_means(model, prepared_stub(bundle.tokenizer, trained[1] * 8), "train")
    model.fit_sampler(means)
    out = save_bundle(tmp_path / "b", model, bundle.config, bundle.tokenizer)
    again = load_bundle(out)
    for key, value in model.sampler.items():
        torch.testing.assert_close(again.model.sampler[key], value)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    z = again.model.sample_latents(3, gen())
    torch.testing.assert_close(z.z_g, model.sample_latents(3, gen()).z_g)
    rc = cli.main(["sample", "--model", str(out), "--out", str(tmp_path / "s"), "--num", "2",
                   "--bars", "4", "--no-wav"])  # fmt: skip
    assert rc == 0 and (tmp_path / "s" / "piece_01.mid").is_file()
    model.sampler = None  # a re-export without one leaves no stale file behind
    save_bundle(out, model, bundle.config, bundle.tokenizer)
    assert not (out / SAMPLER_FILE).exists() and load_bundle(out).model.sampler is None
