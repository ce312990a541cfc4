"""Shared fixtures. Others may append fixtures here."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_MIDI = REPO / "tests" / "data" / "midi"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``<repo>/../shared/datasets`` (real MIDI nobody on this project wrote), or skip."""
    path = REPO / ".." / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path.resolve()}; they live beside the repo")
    return path


@pytest.fixture(scope="session")
def test_midi_dir() -> Path:
    """``tests/data/midi``: a few small real MIDI files (see tests/data/README.md)."""
    return TEST_MIDI


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, test_midi_dir) -> Path:
    """A prepared directory (midilike) of the tests/data/midi files: 2 train, 1 val, 1 test piece."""
    from aurl.config import TokenizerConfig
    from aurl.data.prepare import prepare

    out = tmp_path_factory.mktemp("tiny_data")
    summary = prepare(str(test_midi_dir), out, TokenizerConfig(), splits=(0.5, 0.25, 0.25))
    if summary.files_ok < 3:
        pytest.fail(f"tiny_data: only {summary.files_ok} files prepared from {test_midi_dir}")
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> Path:
    """A run directory of ``aurl train --config configs/tiny.yaml`` on :func:`tiny_data` (20 steps)."""
    from aurl.cli import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            "--data",
            str(tiny_data),
            "--out",
            str(out),
        ]
    )
    if code != 0:
        pytest.fail(f"aurl train on the tiny config exited with {code}")
    return out


class PreparedStub:
    """The two attributes of PreparedData that the VAE metrics read: every split is ``pieces``."""

    def __init__(self, tok, pieces):
        self.tokenizer, self._pieces = tok, pieces

    def split(self, name):
        return self._pieces


@pytest.fixture(scope="session")
def prepared_stub() -> type[PreparedStub]:
    """``prepared_stub(tokenizer, pieces)``: a PreparedData stand-in for VAE metric tests."""
    return PreparedStub
