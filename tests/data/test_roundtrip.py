"""Round-trip report: exact files, failures with reasons, JSON, and that a real difference is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aurl.config import TokenizerConfig
from aurl.data import midi_io, roundtrip
from aurl.data.tokenizers import MusicTokenizer

MIDI = Path(__file__).resolve().parent / "midi"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ["pop909_008.mid", "etude_no4.mid", "empty.mid", "corrupt_control168.mid"]:
        shutil.copy(MIDI / name, tmp_path / name)
    return tmp_path


def test_report_counts_exact_and_failed_files(folder, tmp_path):
    out = tmp_path / "rt.json"
    report = roundtrip.roundtrip(folder, TokenizerConfig(kind="tsd"), json_path=out)
    s = report["summary"]
    assert (s["files"], s["files_inexact"], s["note_match_rate"]) == (2, 0, 1.0)
    assert sorted(Path(f["path"]).name for f in s["failed"]) == [
        "corrupt_control168.mid",
        "empty.mid",
    ]
    assert all(f["reason"] and not f["reason"].startswith(str(folder)) for f in s["failed"])
    assert json.loads(out.read_text()) == report
    assert all(r["exact"] and r["notes"] > 100 for r in report["files"])
    assert "0 inexact" in roundtrip.render(report)


def test_a_lost_note_is_reported(monkeypatch):
    tok = MusicTokenizer(TokenizerConfig())
    score, _ = midi_io.load_score(MIDI / "etude_no4.mid")
    real_decode = tok.decode

    def lossy(ids):
        out = real_decode(ids)
        out.tracks[0].notes.pop()
        return out

    monkeypatch.setattr(tok, "decode", lossy)
    row = roundtrip.compare(tok, score)
    assert not row["exact"] and row["mismatch_count"] == 1
    assert row["mismatches"][0]["kind"] == "missing"


def test_bpe_round_trip_is_exact(folder):
    report = roundtrip.roundtrip(folder, TokenizerConfig(kind="remi", bpe_vocab_size=500))
    assert report["summary"]["files_inexact"] == 0 and report["tokenizer"]["bpe_vocab_size"] == 500


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        roundtrip.roundtrip(tmp_path / "nope", TokenizerConfig())


def _hanging_loader(path):
    """Stub reader: ``hang*`` never finishes, ``die*`` kills its worker, the rest load normally."""
    import os
    import signal
    import time

    if Path(path).name.startswith("hang"):
        time.sleep(120)
    if Path(path).name.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    return midi_io.load_score(path)


def test_a_hanging_file_and_a_dying_worker_are_reported_and_the_rest_compared(tmp_path):
    for name in ["a.mid", "hang.mid", "die.mid", "b.mid"]:
        shutil.copy(MIDI / "etude_no4.mid", tmp_path / name)
    report = roundtrip.roundtrip(
        tmp_path, TokenizerConfig(kind="tsd"), timeout=1.0, loader=_hanging_loader
    )
    s = report["summary"]
    reasons = {Path(f["path"]).name: f["reason"] for f in s["failed"]}
    assert reasons["hang.mid"] == "timeout after 1 s"
    assert reasons["die.mid"].startswith("worker died (killed by SIGKILL")
    assert s["files"] == 2 and s["files_inexact"] == 0 and s["seconds"] < 60
    assert Path(s["slowest"][0]["path"]).name == "hang.mid"
    assert "slowest loads: " in roundtrip.render(report)
