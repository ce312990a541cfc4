"""End to end on CPU: a VAE trained for a few steps, exported as a bundle, driven through the CLI."""

from __future__ import annotations

import json
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
def vae_bundle(tmp_path_factory) -> Path:
    from aurl.bundle import save_bundle
    from aurl.data.midi_io import load_score
    from aurl.data.tokenizers import MusicTokenizer
    from aurl.training.vae_module import SegmentDataset, VAEModule

    tok = MusicTokenizer(TokenizerConfig())
    cfg = RunConfig(
        data=DataConfig(seq_len=64),
        model=ModelConfig(
            mode="vae", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64,
            max_seq_len=256, dropout=0.0,
            vae=VAEConfig(latent_dim=8, bar_latent_dim=4, bars_per_segment=2, encoder_layers=1),
        ),
        optim=OptimConfig(batch_size=4, warmup_steps=0, lr=5e-3),
        trainer=TrainerConfig(max_steps=30, seed=0),
    )  # fmt: skip
    torch.manual_seed(0)
    module = VAEModule(cfg, tok.vocab_size)
    pieces = [np.asarray(tok.encode(load_score(MIDI / "etude_no4.mid")[0]), dtype=np.int64)]
    ds = SegmentDataset(pieces, tok, cfg.model.vae, cfg.data.seq_len)
    trainer = pl.Trainer(
        max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(ds, batch_size=4))
    out = tmp_path_factory.mktemp("vae") / "model"
    save_bundle(out, module.model, module.cfg, tok)
    return out


def test_interpolate_writes_one_decodable_piece_per_step(vae_bundle, tmp_path):
    out = tmp_path / "interp"
    a, b = MIDI / "etude_no4.mid", MIDI / "pop909_008.mid"
    rc = cli.main(["interpolate", str(a), str(b), "--model", str(vae_bundle), "--out", str(out),
                   "--steps", "3", "--no-wav", "--temperature", "1.0"])  # fmt: skip
    assert rc == 0
    blob = json.loads((out / "samples.json").read_text())
    assert blob["command"] == "interpolate" and len(blob["pieces"]) == 3
    for i in range(3):
        assert (out / f"piece_{i:02d}.mid").stat().st_size > 0
        assert (out / f"piece_{i:02d}.png").is_file()
    from aurl.data.midi_io import load_score

    score, _ = load_score(
        out / "piece_01.mid"
    )  # the middle step is a readable MIDI file with notes
    assert score.note_num() > 0 and blob["pieces"][1]["notes"] > 0


def test_interpolate_is_deterministic_and_ends_match_encoded_files(vae_bundle, tmp_path):
    from aurl.bundle import load_bundle
    from aurl.generation import latent

    bundle = load_bundle(vae_bundle)
    a, b = MIDI / "etude_no4.mid", MIDI / "pop909_008.mid"
    za = latent.encode_file(bundle, a)
    path = bundle.model.interpolate(za, latent.encode_file(bundle, b), 4)
    torch.testing.assert_close(path.z_g[0], za.z_g[0])
    rows = [latent.decode_rows(bundle, path, 1.0, 0.95, seed=7) for _ in range(2)]
    assert rows[0] == rows[1] and all(len(r) > 0 for r in rows[0])


def test_every_decoded_segment_is_decodable_and_fills_exactly_its_bars(vae_bundle):
    from aurl.bundle import load_bundle
    from aurl.generation import constraints as C
    from aurl.generation import latent

    bundle = load_bundle(vae_bundle)
    tok, v = bundle.tokenizer, bundle.model.cfg.vae
    z = bundle.model.sample_latents(4, torch.Generator().manual_seed(3))
    vocab = C.Vocab.from_tokenizer(tok)
    for row in latent.decode_rows(bundle, z, 1.0, 0.95, seed=0):
        ids = [tok.bos_id, *row, tok.eos_id]
        assert tok.count_notes(ids) > 0 and tok.decode(ids).note_num() > 0
        state = C.replay(ids, vocab)
        assert state.phase == "done" and not state.sounding
        assert state.time == pytest.approx(v.bars_per_segment * v.beats_per_bar)


def test_sample_and_vary_through_the_cli(vae_bundle, tmp_path):
    rc = cli.main(["sample", "--model", str(vae_bundle), "--out", str(tmp_path / "s"), "--num", "1",
                   "--bars", "4", "--no-wav"])  # fmt: skip
    assert rc == 0 and len(json.loads((tmp_path / "s" / "samples.json").read_text())["pieces"]) == 1
    rc = cli.main(["vary", str(MIDI / "etude_no4.mid"), "--model", str(vae_bundle), "--out",
                   str(tmp_path / "v"), "--num", "2", "--amount", "0.5", "--no-wav"])  # fmt: skip
    assert rc == 0 and (tmp_path / "v" / "piece_01.mid").is_file()


def test_vary_warns_when_its_variations_are_copies(vae_bundle, tmp_path, capsys):
    # amount 0: every variation is the input's own latent, decoded greedily -> identical pieces
    rc = cli.main(["vary", str(MIDI / "etude_no4.mid"), "--model", str(vae_bundle), "--out",
                   str(tmp_path / "v"), "--num", "3", "--amount", "0", "--no-wav"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "warning: 2 of 3 pieces repeat another one exactly" in out
    rc = cli.main(["sample", "--model", str(vae_bundle), "--out", str(tmp_path / "s"), "--num", "2",
                   "--bars", "4", "--no-wav"])  # fmt: skip
    assert rc == 0 and "warning" not in capsys.readouterr().out  # prior samples differ by seed


def test_latent_commands_refuse_a_plain_language_model(tmp_path, capsys):
    from aurl.bundle import save_bundle
    from aurl.data.tokenizers import MusicTokenizer
    from aurl.models import build_model

    tok = MusicTokenizer(TokenizerConfig())
    cfg = RunConfig(
        model=ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    )
    save_bundle(tmp_path / "lm", build_model(cfg.model), cfg, tok)
    rc = cli.main(
        [
            "vary",
            str(MIDI / "etude_no4.mid"),
            "--model",
            str(tmp_path / "lm"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "has no latent space" in capsys.readouterr().err
