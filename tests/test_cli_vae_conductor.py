"""End to end on CPU with the conductor decoder: a tiny VAE trained a few steps, driven through
``aurl interpolate`` / ``vary`` and the evaluation metrics."""

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
    from aurl.training.vae_module import SegmentDataset, VAEModule

    tok = MusicTokenizer(TokenizerConfig())
    cfg = RunConfig(
        data=DataConfig(seq_len=96),
        model=ModelConfig(
            mode="vae", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64,
            max_seq_len=128, dropout=0.0,
            vae=VAEConfig(latent_dim=8, bar_latent_dim=4, bars_per_segment=2, encoder_layers=1,
                          decoder="conductor", bow_weight=1.0),
        ),
        optim=OptimConfig(batch_size=4, warmup_steps=0, lr=5e-3),
        trainer=TrainerConfig(max_steps=20, seed=0),
    )  # fmt: skip
    torch.manual_seed(0)
    module = VAEModule(cfg, tok.vocab_size)
    pieces = [np.asarray(tok.encode(load_score(MIDI / "etude_no4.mid")[0]), dtype=np.int64)]
    ds = SegmentDataset(pieces, tok, cfg.model.vae, cfg.data.seq_len)
    trainer = pl.Trainer(
        max_steps=20, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(ds, batch_size=4))
    out = tmp_path_factory.mktemp("vae_conductor") / "model"
    save_bundle(out, module.model, module.cfg, tok)
    return out, pieces


def test_conductor_segments_decode_and_fill_exactly_their_bars(trained):
    from aurl.bundle import load_bundle
    from aurl.generation import constraints as C
    from aurl.generation import latent

    bundle = load_bundle(trained[0])
    tok, v = bundle.tokenizer, bundle.model.cfg.vae
    assert bundle.model.conductor is not None
    z = bundle.model.sample_latents(2, torch.Generator().manual_seed(3))
    rows = latent.decode_rows(bundle, z, 1.0, 0.95, seed=0)
    vocab = C.Vocab.from_tokenizer(tok)
    for row in rows:
        ids = [tok.bos_id, *row, tok.eos_id]
        assert tok.decode(ids).note_num() > 0
        state = C.replay(ids, vocab)
        assert state.phase == "done" and not state.sounding
        assert state.time == pytest.approx(v.bars_per_segment * v.beats_per_bar)


@pytest.mark.slow  # ~20 s of decoding on 2 shared cores; decode_bars is covered by the test above
def test_interpolate_and_vary_through_the_cli_with_the_conductor(trained, tmp_path):
    model = trained[0]
    a, b = MIDI / "etude_no4.mid", MIDI / "pop909_008.mid"
    rc = cli.main(["interpolate", str(a), str(b), "--model", str(model), "--out",
                   str(tmp_path / "i"), "--steps", "3", "--no-wav", "--temperature", "1"])  # fmt: skip
    assert rc == 0
    blob = json.loads((tmp_path / "i" / "samples.json").read_text())
    assert len(blob["pieces"]) == 3 and all(p["notes"] > 0 for p in blob["pieces"])
    rc = cli.main(["vary", str(a), "--model", str(model), "--out", str(tmp_path / "v"),
                   "--num", "2", "--amount", "0.5", "--no-wav"])  # fmt: skip
    assert rc == 0 and (tmp_path / "v" / "piece_01.mid").is_file()


def test_vae_metrics_report_the_keys_evaluate_promises(trained, prepared_stub):
    from aurl.bundle import load_bundle
    from aurl.training.vae_metrics import vae_metrics

    bundle = load_bundle(trained[0])
    got = vae_metrics(
        bundle,
        prepared_stub(bundle.tokenizer, trained[1]),
        "test",
        greedy_segments=1,
        max_segments=4,
    )
    assert got["decoder"] == "conductor"
    assert (
        0.0 <= got["recon_note_f1"] <= 1.0 and got["recon_note_f1"] == got["recon_note_f1_greedy"]
    )
    kl = got["kl_per_segment"]
    assert kl["total"] == pytest.approx(kl["global"] + kl["bar"]) and kl["global"] > 0
    assert got["bits_per_note"] > 0
    assert math.isfinite(got["z_usage_nats_per_segment"])
    assert 0 <= got["active_units_vs_noise_global"] <= 8
    assert 0 <= got["active_units_vs_noise_bar"] <= 4


def test_encode_segments_are_the_first_segments_in_order(trained):
    from aurl.bundle import load_bundle
    from aurl.generation import latent

    bundle = load_bundle(trained[0])
    model, tok = bundle.model, bundle.tokenizer
    ids = trained[1][0]
    z = latent.encode_segments(model, tok, ids, 3)
    assert z.z_g.shape == (3, 8) and z.z_b.shape == (3, 2, 4)
    # row 0 is what encode_ids gives for the first segment alone (batching and padding change
    # nothing); the segments differ from one another
    torch.testing.assert_close(z.z_g[:1], latent.encode_ids(model, tok, ids).z_g, atol=1e-5, rtol=0)
    assert not torch.allclose(z.z_g[0], z.z_g[1])
    with pytest.raises(ValueError, match="max_segments"):
        latent.encode_segments(model, tok, ids, 0)


def test_interpolate_segments_is_step_major_with_both_ends_exact(trained):
    from aurl.bundle import load_bundle
    from aurl.generation import latent

    bundle = load_bundle(trained[0])
    model, tok = bundle.model, bundle.tokenizer
    ids = trained[1][0]
    za = latent.encode_segments(model, tok, ids, 3)
    zb = latent.encode_segments(model, tok, ids[::-1].copy(), 2)  # another ladder, 2 segments
    zb = latent.Latents(zb.z_g + 1.0, zb.z_b - 1.0)
    path = latent.interpolate_segments(model, za, zb, 4)
    assert path.z_g.shape == (8, 8)  # 4 steps x min(3, 2) segments
    torch.testing.assert_close(path.z_g[0:2], za.z_g[:2])  # step 0 = A's segments
    torch.testing.assert_close(path.z_b[6:8], zb.z_b[:2])  # step 3 = B's segments
    assert not torch.allclose(path.z_g[2], za.z_g[0]) and not torch.allclose(path.z_g[2], zb.z_g[0])


@pytest.mark.slow  # decodes 3 steps x 2 segments
def test_interpolate_whole_pieces_concatenates_segments(trained, tmp_path):
    from aurl.bundle import load_bundle
    from aurl.generation import latent

    bundle = load_bundle(trained[0])
    a, b = MIDI / "etude_no4.mid", MIDI / "pop909_008.mid"
    s = latent.interpolate(bundle, a, b, out=tmp_path, steps=3, bars=4, wav=False)
    assert len(s.pieces) == 3
    assert all(p.beats == pytest.approx(16.0) for p in s.pieces)  # 2 segments x 2 bars x 4 beats
