"""A tiny random-weight bundle (tests/generation/tinymodel.py) served by the app under test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))

from tinymodel import make_bundle

from aurl.bundle import load_bundle


@pytest.fixture(scope="session")
def tiny_serve_bundle(tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("serve_bundle")))


@pytest.fixture(scope="session")
def learned_bundle(tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("learned_bundle"), position="learned"))
