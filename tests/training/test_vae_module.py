"""VAEModule: KL schedules, free bits, segment dataset, training steps (vae, vae_gan), metrics, plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from aurl.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TokenizerConfig,
    TrainerConfig,
    VAEConfig,
)
from aurl.models.discriminator import discriminator_loss, relaxed_tokens
from aurl.training.vae_metrics import note_f1, vae_metrics
from aurl.training.vae_module import (
    SegmentDataset,
    VAEModule,
    adapt_beta,
    free_bits_kl,
    kl_weight,
    plot_gan_losses,
    trim_batch,
)

MIDI = Path(__file__).resolve().parents[1] / "data" / "midi"


class FakePrepared:
    """The two members of PreparedData that the VAE code reads: ``tokenizer`` and ``split``."""

    class _Split:
        def __init__(self, pieces: list[np.ndarray]) -> None:
            self.pieces = pieces

        def __len__(self) -> int:
            return len(self.pieces)

        def piece(self, i: int) -> np.ndarray:
            return self.pieces[i]

    def __init__(self, tokenizer, pieces: list[np.ndarray]) -> None:
        self.tokenizer = tokenizer
        self._split = self._Split(pieces)

    def split(self, name: str) -> _Split:
        return self._split


@pytest.fixture(scope="module")
def prepared() -> FakePrepared:
    from aurl.data.midi_io import load_score
    from aurl.data.tokenizers import MusicTokenizer

    tok = MusicTokenizer(TokenizerConfig())
    pieces = [np.asarray(tok.encode(load_score(MIDI / "etude_no4.mid")[0]), dtype=np.int64)]
    return FakePrepared(tok, pieces)


def run_cfg(mode: str, vocab: int, **vae) -> RunConfig:
    v = {"latent_dim": 8, "bar_latent_dim": 4, "bars_per_segment": 2, "encoder_layers": 1,
         "kl_warmup_steps": 2, "disc_windows": (8, 32), "disc_layers": 1, "gan_warmup_steps": 0, **vae}  # fmt: skip
    return RunConfig(
        data=DataConfig(seq_len=64),
        model=ModelConfig(
            mode=mode,
            vocab_size=vocab,
            d_model=32,
            n_layers=1,
            n_heads=2,
            d_ff=64,
            max_seq_len=96,
            dropout=0.0,
            vae=VAEConfig(**v),
        ),
        optim=OptimConfig(batch_size=4, warmup_steps=0, lr=1e-3),
        trainer=TrainerConfig(max_steps=3, seed=0),
    )


def test_kl_schedules_at_known_steps():
    def w(kind: str, step: int) -> float:
        return kl_weight(step, VAEConfig(kl_schedule=kind, beta=2.0, kl_warmup_steps=100))

    assert [w("linear", s) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    assert (
        w("cosine", 0) == 0.0 and w("cosine", 50) == pytest.approx(1.0) and w("cosine", 100) == 2.0
    )
    # cyclical: ramp over 100 steps, hold for 100, restart at 200
    assert [w("cyclical", s) for s in (0, 50, 100, 150, 200, 250)] == [0.0, 1.0, 2.0, 2.0, 0.0, 1.0]
    assert w("constant", 0) == 2.0


def test_free_bits_clamps_each_dimension_to_the_floor():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 4.0, 0.0]])  # batch means 0.2, 3.0, 0.0
    assert float(free_bits_kl(kl, 0.5)) == pytest.approx(0.5 + 3.0 + 0.5)
    assert float(free_bits_kl(kl, 0.0)) == pytest.approx(3.2)
    x = kl.clone().requires_grad_(True)
    free_bits_kl(x, 0.5).backward()
    # only the dimension above the floor gets gradient
    assert (
        x.grad[:, 0].abs().sum() == 0
        and x.grad[:, 2].abs().sum() == 0
        and x.grad[:, 1].abs().sum() > 0
    )


def test_adaptive_beta_moves_toward_the_target():
    assert adapt_beta(1.0, kl=20.0, target=10.0, rate=0.1) == pytest.approx(math.exp(0.1))
    assert adapt_beta(1.0, kl=5.0, target=10.0, rate=0.1) == pytest.approx(math.exp(-0.05))
    assert adapt_beta(1e-4, kl=0.0, target=10.0, rate=1.0) == 1e-4  # clamped


def test_segment_dataset_rows_start_with_bos_and_follow_bar_order(prepared):
    tok = prepared.tokenizer
    ds = SegmentDataset(
        prepared.split("train").pieces, tok, VAEConfig(bars_per_segment=2), 64, seed=3
    )
    assert len(ds) > 10 and ds.length == 64
    row = ds[0]
    tokens, bars = row["tokens"].numpy(), row["bar_ids"].numpy()
    assert tokens[0] == tok.bos_id and tokens.shape == (64,)
    real = bars[tokens != tok.pad_id]
    assert real.min() == 0 and real.max() <= 1 and np.all(np.diff(real[1:-1]) >= 0)
    # item i is a pure function of (seed, i); a second pass is another permutation of the same set
    assert torch.equal(ds[5]["tokens"], ds[5]["tokens"])
    first = {tuple(ds[i]["tokens"].tolist()) for i in range(len(ds))}
    second = {tuple(ds[i + len(ds)]["tokens"].tolist()) for i in range(len(ds))}
    assert first == second


def _fit(module: VAEModule, ds: SegmentDataset, tmp_path: Path, **trainer_kw) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=module.cfg.trainer.max_steps, accelerator="cpu", logger=CSVLogger(tmp_path / "logs", name="csv", version=""),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1, default_root_dir=tmp_path, limit_val_batches=1, val_check_interval=3,
        num_sanity_val_steps=0, **trainer_kw,
    )  # fmt: skip
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    trainer.fit(module, loader, DataLoader(ds, batch_size=4))
    return trainer


def test_trim_batch_drops_only_all_pad_columns():
    tokens = torch.tensor([[1, 5, 6, 2, 0, 0, 0], [1, 7, 2, 0, 0, 0, 0]])
    bars = torch.where(tokens != 0, 0, -1)
    out = trim_batch({"tokens": tokens, "bar_ids": bars})
    assert out["tokens"].tolist() == [[1, 5, 6, 2], [1, 7, 2, 0]]
    assert out["bar_ids"].shape == (2, 4)


def test_vae_trains_and_logs_named_terms(prepared, tmp_path):
    tok = prepared.tokenizer
    torch.manual_seed(0)
    module = VAEModule(run_cfg("vae", tok.vocab_size), tok.vocab_size)
    ds = SegmentDataset(prepared.split("train").pieces, tok, module.vcfg, 64)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = _fit(module, ds, tmp_path, gradient_clip_val=1.0)
    assert trainer.global_step == 3
    m = trainer.logged_metrics
    for name in ("train/loss", "train/recon", "train/kl", "train/beta", "val/loss", "val/acc"):
        assert name in m and math.isfinite(float(m[name])), name
    assert float(m["train/beta"]) == pytest.approx(1.0)  # linear warm-up of 2 steps, step 2
    after = module.model.state_dict()
    for name in (
        "encoder_blocks.0.attn.qkv.weight",
        "decoder.blocks.0.mlp.up.weight",
        "to_global.weight",
    ):
        assert not torch.equal(before[name], after[name]), name


def test_discriminator_loss_reaches_only_the_discriminator(prepared):
    tok = prepared.tokenizer
    module = VAEModule(run_cfg("vae_gan", tok.vocab_size), tok.vocab_size)
    ds = SegmentDataset(prepared.split("train").pieces, tok, module.vcfg, 64)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    out, _ = module.vae_terms(batch)
    mask = batch["tokens"][:, 1:] != 0
    real = torch.nn.functional.one_hot(batch["tokens"][:, 1:], tok.vocab_size).float()
    fake = relaxed_tokens(out.logits, 1.0, torch.Generator().manual_seed(0))
    loss = discriminator_loss(
        module.discriminator(real, mask).scores,
        module.discriminator(fake.detach(), mask).scores,
        "hinge",
    )
    loss.backward()
    assert all(p.grad is None for p in module.model.parameters())
    assert (
        sum(
            float(p.grad.abs().sum())
            for p in module.discriminator.parameters()
            if p.grad is not None
        )
        > 0
    )
    opt_g, opt_d = (d["optimizer"] for d in module.configure_optimizers())
    g_params = {id(p) for group in opt_g.param_groups for p in group["params"]}
    d_params = {id(p) for group in opt_d.param_groups for p in group["params"]}
    assert d_params == {id(p) for p in module.discriminator.parameters()}
    assert not g_params & d_params


def test_vae_gan_trains_both_players_counts_steps_once_and_plots(prepared, tmp_path):
    tok = prepared.tokenizer
    torch.manual_seed(0)
    module = VAEModule(run_cfg("vae_gan", tok.vocab_size, r1_weight=1.0), tok.vocab_size)
    ds = SegmentDataset(prepared.split("train").pieces, tok, module.vcfg, 64)
    d_before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    g_before = module.model.decoder.blocks[0].mlp.up.weight.clone()
    trainer = _fit(module, ds, tmp_path)
    assert trainer.global_step == 3  # the discriminator's raw step is not counted
    m = trainer.logged_metrics
    for name in ("train/adv_g", "train/adv_d", "train/fm", "train/r1", "train/recon", "val/loss"):
        assert name in m and math.isfinite(float(m[name])), name
    changed = [
        k for k, v in module.discriminator.state_dict().items() if not torch.equal(v, d_before[k])
    ]
    assert any("embed" in k for k in changed) and any("head" in k for k in changed)
    assert not torch.equal(g_before, module.model.decoder.blocks[0].mlp.up.weight)
    png = tmp_path / "gan_losses.png"
    assert png.is_file() and png.stat().st_size > 5000
    assert plot_gan_losses(tmp_path) == png


def test_vae_metrics_figures_are_in_range(prepared):
    tok = prepared.tokenizer
    torch.manual_seed(0)
    module = VAEModule(run_cfg("vae", tok.vocab_size), tok.vocab_size)
    res = vae_metrics(module.model, prepared, "test", max_segments=6, greedy_segments=2)
    assert res["segments"] == 6 and res["greedy_segments"] == 2
    assert 0.0 <= res["recon_acc_teacher"] <= 1.0 and 0.0 <= res["recon_acc_greedy"] <= 1.0
    # untrained: next-token NLL near log V
    assert abs(res["recon_nll_per_token"] - math.log(tok.vocab_size)) < 1.0
    assert res["bits_per_note"] > 0 and res["elbo_bits_per_note"] >= res["bits_per_note"]
    assert res["kl_global"] >= 0 and res["kl_bar"] >= 0
    assert 0 <= res["active_units_global"] <= 8 and 0 <= res["active_units_bar"] <= 4


def test_note_f1_counts_matching_notes_not_token_positions(prepared):
    tok = prepared.tokenizer
    ref = prepared.split("test").piece(0)[1:400].tolist()
    assert note_f1(tok, ref, ref) == 1.0
    assert note_f1(tok, ref, []) == 0.0
    half = note_f1(tok, ref, ref[: len(ref) // 2])  # about half the notes: F1 ~ 2/3
    assert 0.4 < half < 0.9


def test_conductor_objective_adds_the_weighted_bag_of_notes_term(prepared, tmp_path):
    tok = prepared.tokenizer
    torch.manual_seed(0)
    cfg = run_cfg("vae", tok.vocab_size, decoder="conductor", bow_weight=0.5)
    module = VAEModule(cfg, tok.vocab_size)
    ds = SegmentDataset(prepared.split("train").pieces, tok, module.vcfg, 64)
    m = _fit(module, ds, tmp_path).logged_metrics
    want = m["train/recon"] + m["train/beta"] * m["train/kl_penalized"] + 0.5 * m["train/bow"]
    assert float(m["train/loss"]) == pytest.approx(float(want), rel=1e-5)
    assert float(m["train/bow"]) > 0 and math.isfinite(float(m["val/acc"]))


def test_vae_gan_trains_on_the_conductors_bar_rows(prepared, tmp_path):
    tok = prepared.tokenizer
    torch.manual_seed(0)
    module = VAEModule(run_cfg("vae_gan", tok.vocab_size, decoder="conductor"), tok.vocab_size)
    ds = SegmentDataset(prepared.split("train").pieces, tok, module.vcfg, 64)
    trainer = _fit(module, ds, tmp_path)
    assert trainer.global_step == 3
    for name in ("train/adv_g", "train/adv_d", "train/bow"):
        assert math.isfinite(float(trainer.logged_metrics[name])), name
