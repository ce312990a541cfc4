"""Build a tiny random-weight bundle with a real tokenizer (shared by the generation and CLI tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from aurl.bundle import save_bundle
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
