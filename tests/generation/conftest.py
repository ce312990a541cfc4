"""A tiny random-weight model with a real MIDILike tokenizer, saved as a bundle once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinymodel import make_bundle

from aurl.bundle import load_bundle


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
