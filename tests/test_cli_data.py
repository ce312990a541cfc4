"""End to end through the CLI: aurl prepare (with an empty and a corrupt file), roundtrip --json, tokens describe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aurl.cli import main
from aurl.data.dataset import PreparedData

MIDI = Path(__file__).resolve().parent / "data" / "midi"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in [
        "pop909_008.mid",
        "etude_no4.mid",
        "multitrack_drums.mid",
        "empty.mid",
        "corrupt_control168.mid",
    ]:
        shutil.copy(MIDI / name, src / name)
    (src / "zero.mid").write_bytes(b"")
    return src


def test_prepare_reports_failures_and_writes_readable_data(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["prepare", str(folder), "--out", str(out), "--tokenizer", "remi", "--workers", "2"])
        == 0
    )
    text = capsys.readouterr().out
    assert "3 ok / 6" in text and "empty.mid: no notes" in text and "zero.mid: empty file" in text
    data = PreparedData(out)
    assert data.manifest["files_ok"] == 3 and data.tokenizer.cfg.kind == "remi"
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 3
    assert main(["prepare", str(folder), "--out", str(out), "--tokenizer", "remi"]) == 0
    assert "reused cached data" in capsys.readouterr().out


def test_prepare_of_nothing_loadable_exits_nonzero(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(MIDI / "empty.mid", src / "empty.mid")
    assert main(["prepare", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "none of 1 files" in capsys.readouterr().err


def test_roundtrip_json(folder, tmp_path, capsys):
    report_path = tmp_path / "rt.json"
    assert (
        main(["roundtrip", str(folder), "--tokenizer", "midilike", "--json", str(report_path)]) == 0
    )
    report = json.loads(report_path.read_text())
    assert report["summary"]["files"] == 3 and report["summary"]["files_inexact"] == 0
    assert len(report["summary"]["failed"]) == 3
    assert "0 inexact" in capsys.readouterr().out


def test_tokens_describe_default_and_prepared(tmp_path, capsys):
    assert main(["tokens", "describe", "--tokenizer", "tsd"]) == 0
    text = capsys.readouterr().out
    assert (
        "tokenizer tsd" in text
        and "Pitch_21 .. Pitch_108" in text
        and "Program_0 .. Program_-1" in text
    )
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(MIDI / "etude_no4.mid", src / "etude_no4.mid")
    assert main(["prepare", str(src), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert main(["tokens", "describe", "--data", str(tmp_path / "out")]) == 0
    assert "tokenizer midilike" in capsys.readouterr().out
