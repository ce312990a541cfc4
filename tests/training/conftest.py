"""Tiny synthetic data for trainer tests: a real tokenizer, windows that are a pure function of (seed, i)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from aurl.config import RunConfig, load_config
from aurl.data.tokenizers import MusicTokenizer

TINY = [
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64",
    "model.max_seq_len=32", "model.dropout=0.1", "data.seq_len=32", "optim.batch_size=4",
    "optim.warmup_steps=2", "optim.lr=3e-3", "trainer.max_steps=20", "trainer.val_every_steps=10",
    "trainer.checkpoint_every_steps=5", "trainer.val_batches=2", "trainer.sample_tokens=8",
    "trainer.log_every_steps=5",
]  # fmt: skip


class PatternWindows(torch.utils.data.Dataset):
    """Item i: an arithmetic token pattern (learnable) starting at a seeded offset; (T+1,) long."""

    def __init__(self, seq_len: int, seed: int = 0, length: int = 10**9) -> None:
        self.seq_len, self.seed, self.length = seq_len, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, i])
        start = int(rng.integers(0, 40))
        return torch.from_numpy((np.arange(self.seq_len + 1) * 3 + start) % 40 + 4).long()


@pytest.fixture(scope="session")
def tokenizer() -> MusicTokenizer:
    return MusicTokenizer(load_config().tokenizer)


def _tiny_config(tokenizer: MusicTokenizer, *overrides: str) -> RunConfig:
    cfg = load_config(None, [*TINY, *overrides])
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
    )


@pytest.fixture
def tiny_config():
    """``tiny_config(tokenizer, "key=value", ...)`` -> a RunConfig that trains in about a second."""
    return _tiny_config


@pytest.fixture
def windows():
    """The :class:`PatternWindows` class."""
    return PatternWindows
