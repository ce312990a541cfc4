"""A tiny random-weight model with a real MIDILike tokenizer, saved as a bundle once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aurl.bundle import load_bundle, save_bundle
from aurl.config import DataConfig, ModelConfig, RunConfig, TokenizerConfig
from aurl.data.tokenizers import MusicTokenizer
from aurl.models import build_model

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_seq_len": 64, "dropout": 0.0}


def make_bundle(directory: Path, kind: str = "midilike", **model_kw) -> Path:
    tok = MusicTokenizer(TokenizerConfig(kind=kind))
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, **{**TINY, **model_kw})
    cfg = RunConfig(
        tokenizer=tok.cfg, data=DataConfig(seq_len=model_cfg.max_seq_len), model=model_cfg
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    save_bundle(directory, model, cfg, tok)
    return directory


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_dir: Path):
    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="session")
def remi_bundle(tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("remi_bundle"), kind="remi"))


@pytest.fixture(scope="session")
def etude() -> Path:
    path = Path(__file__).resolve().parents[1] / "data" / "midi" / "etude_no4.mid"
    if not path.is_file():
        pytest.skip(f"{path} missing (tests/data/midi, see tests/data/README.md)")
    return path
