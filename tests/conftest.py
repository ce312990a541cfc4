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
