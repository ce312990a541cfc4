"""The shipped default model (models/bach_small) loads, is what `aurl generate` uses without
--model, stays within its size budget, and writes chorale-like music."""

import json

import pretty_midi

from aurl.bundle import load_bundle
from aurl.cli import DEFAULT_MODEL, main
from aurl.models import num_parameters


def test_shipped_bundle_loads_within_budget():
    weights = DEFAULT_MODEL / "model.safetensors"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    bundle = load_bundle(DEFAULT_MODEL)
    assert bundle.config.model.mode == "transformer"
    assert num_parameters(bundle.model) == 6_439_168
    assert (DEFAULT_MODEL / "MODEL_CARD.md").read_text().count("bits per note") >= 1


def test_generate_without_model_uses_the_shipped_one(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["generate", "--out", str(out), "--num", "1", "--bars", "4", "--seed", "1",
            "--key", "G:maj", "--no-wav"]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "samples.json").read_text())
    assert meta["model"] == str(DEFAULT_MODEL)
    pm = pretty_midi.PrettyMIDI(str(out / "piece_00.mid"))
    notes = [n for inst in pm.instruments for n in inst.notes]
    assert len(notes) >= 8  # four bars of four-part writing, not silence
    g_major = {7, 9, 11, 0, 2, 4, 6}
    assert all(n.pitch % 12 in g_major for n in notes)
    assert (out / "piece_00.musicxml").stat().st_size > 0 and (
        out / "piece_00.png"
    ).stat().st_size > 0
