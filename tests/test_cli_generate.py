"""End to end: `aurl generate` / `aurl infill` through aurl.cli.main, every output file opened by
other readers (mido, pretty_midi, music21)."""

import json
import sys
from pathlib import Path

import mido
import music21
import pretty_midi
import pytest
import symusic

from aurl.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "generation"))
from tinymodel import make_bundle


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("cli_model"))


def test_generate_writes_every_file_type_that_other_readers_open(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["generate", "--model", str(model_dir), "--out", str(out), "--num", "2", "--bars", "2",
            "--key", "A:min", "--max-polyphony", "4", "--pitch-range", "40-90", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "piece_01" in printed and "audio:" in printed
    for i in range(2):
        stem = out / f"piece_{i:02d}"
        for suffix in (".mid", ".musicxml", ".png", ".wav"):
            assert stem.with_suffix(suffix).stat().st_size > 0, suffix
        mido.MidiFile(stem.with_suffix(".mid"))
        pm = pretty_midi.PrettyMIDI(str(stem.with_suffix(".mid")))
        pitches = [n.pitch for inst in pm.instruments for n in inst.notes]
        assert pitches and all(40 <= p <= 90 for p in pitches)
        music21.converter.parse(stem.with_suffix(".musicxml"))
    meta = json.loads((out / "samples.json").read_text())
    assert meta["model"] == str(model_dir) and meta["settings"]["seed"] == 3
    assert [p["seed"] for p in meta["pieces"]] == [3, 4]


def test_infill_through_the_cli(model_dir, tmp_path, capsys):
    source = Path(__file__).resolve().parent / "data" / "midi" / "pop909_008.mid"
    if not source.is_file():
        pytest.skip(f"{source} missing")
    full = symusic.Score(str(source))
    prompt = tmp_path / "two_bars.mid"  # two bars keep the MusicXML export quick
    full.clip(0, 8 * full.tpq).dump_midi(str(prompt))
    out = tmp_path / "inf"
    argv = [
        "infill",
        str(prompt),
        "--bars",
        "2-2",
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--no-wav",
    ]
    assert main(argv) == 0
    assert "aurl infill: 1 piece" in capsys.readouterr().out
    assert (out / "piece_00.mid").is_file() and (out / "piece_00.musicxml").is_file()
    meta = json.loads((out / "samples.json").read_text())
    assert meta["settings"]["bars"] == [2, 2]


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no model at" in err and "--model" in err


def test_only_midi_writes_midi_and_settings_only(model_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["generate", "--model", str(model_dir), "--out", str(out), "--num", "2", "--bars", "1",
            "--only-midi"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["piece_00.mid", "piece_01.mid", "samples.json"]
