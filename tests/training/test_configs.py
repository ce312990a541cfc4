"""The shipped presets load, validate and have the sizes their comments promise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aurl.config import load_config
from aurl.models import build_model, num_parameters

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("tiny", 10_000, 100_000),
        ("bach_small", 5_000_000, 8_000_000),
        ("base", 50_000_000, 100_000_000),
    ],
)
def test_preset_loads_and_has_its_documented_size(name, low, high):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    model = build_model(dataclasses.replace(cfg.model, vocab_size=560))
    assert low <= num_parameters(model) <= high


def test_unknown_key_in_a_preset_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tiny.yaml").read_text() + "  max_stpes: 3\n")
    with pytest.raises(ValueError, match=r"trainer\.max_stpes"):
        load_config(bad)
