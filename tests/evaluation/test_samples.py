"""The samples runner: real vs real high, random notes low; bad files skipped; CLI end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import symusic

from aurl.cli import main
from aurl.evaluation import samples as S
from aurl.evaluation.features import piece_from_score

BACH = Path(__file__).resolve().parents[1] / "data" / "bach"
BASE = "aurl.evaluation.features"


@pytest.fixture(scope="module")
def bach_tables():
    """Features of the 24 test chorales, split 12 / 12, and of 12 random-note pieces."""
    specs = S.registered_features()
    names = list(specs)
    files = sorted(BACH.glob("*.mid"))
    assert len(files) == 24
    pieces = [piece_from_score(symusic.Score(str(f)), f.name) for f in files]
    real_a = S.feature_table(pieces[0::2], names)
    real_b = S.feature_table(pieces[1::2], names)
    rand = S.feature_table(
        [piece_from_score(S.random_note_score(seed), f"r{seed}") for seed in range(12)], names
    )
    return specs, real_a, real_b, rand


def test_real_vs_real_overlaps_and_random_notes_do_not(bach_tables):
    specs, real_a, real_b, rand = bach_tables
    real = S.compare_tables(real_a, real_b, specs)
    noise = S.compare_tables(rand, real_b, specs)
    assert real["mean_overlap_area"] > 0.75
    assert noise["mean_overlap_area"] < 0.5
    assert noise["frechet_distance"] > 10 * real["frechet_distance"]
    # what random notes get wrong, feature by feature
    for name in ("scale_consistency", "in_key_rate", "polyphony", "groove_consistency"):
        assert noise["features"][name]["overlap_area"] < 0.2, name
        assert real["features"][name]["overlap_area"] > 0.6, name
    assert set(real["features"]) == set(specs)


def test_shuffled_pitches_lose_key_but_keep_rhythm(bach_tables):
    """Shuffling pitch classes (a random permutation per piece) breaks scales, not rhythm."""
    specs, _, real_b, _ = bach_tables
    rng = np.random.default_rng(0)
    shuffled = []
    for f in sorted(BACH.glob("*.mid"))[0::2]:
        score = symusic.Score(str(f))
        perm = rng.permutation(12)
        for track in score.tracks:
            for note in track.notes:
                note.pitch = note.pitch - note.pitch % 12 + int(perm[note.pitch % 12])
        shuffled.append(piece_from_score(score, f.name))
    result = S.compare_tables(S.feature_table(shuffled, list(specs)), real_b, specs)
    assert result["features"]["in_key_rate"]["overlap_area"] < 0.3
    assert result["features"]["groove_consistency"]["overlap_area"] > 0.6
    assert result["features"]["ioi_histogram"]["overlap_area"] > 0.6


def test_folder_with_corrupt_and_empty_files_reports_and_skips_them(tmp_path, test_midi_dir):
    for name in ("corrupt_control168.mid", "empty.mid", "pop909_008.mid", "multitrack_drums.mid"):
        shutil.copy(test_midi_dir / name, tmp_path / name)
    (tmp_path / "notmidi.mid").write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    pieces, skipped = S.load_folder(tmp_path)
    assert sorted(p.name for p in pieces) == ["multitrack_drums.mid", "pop909_008.mid"]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert set(reasons) == {"corrupt_control168.mid", "empty.mid", "notmidi.mid"}
    assert "168" in reasons["corrupt_control168.mid"]
    assert reasons["empty.mid"] == "no notes"
    assert "not a MIDI file" in reasons["notmidi.mid"]


def test_multitrack_drum_tempo_change_file_gives_finite_features(test_midi_dir):
    from aurl.data.midi_io import load_score

    score, _ = load_score(test_midi_dir / "multitrack_drums.mid")
    values = S.feature_table([piece_from_score(score)], list(S.registered_features())).values
    for name, v in values.items():
        assert np.isfinite(v).all(), name
    assert values["programs_used"][0] >= 2


def test_cli_samples_mode_writes_json_report_and_skips_bad_files(tmp_path, tiny_data, capsys):
    folder = tmp_path / "samples"
    folder.mkdir()
    for seed in range(6):
        S.random_note_score(seed).dump_midi(str(folder / f"r{seed}.mid"))
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00")
    out, report = tmp_path / "e.json", tmp_path / "report"
    argv = ["evaluate", "--samples", str(folder), "--reference", str(tiny_data), "--split",
            "train", "--json", str(out), "--report", str(report), "--no-cache"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 6
    assert [Path(s["path"]).name for s in result["skipped"]] == ["broken.mid"]
    assert result["reference_kind"] == "source"
    assert 0.0 <= result["mean_overlap_area"] <= 1.0
    assert math.isfinite(result["frechet_distance"])
    for name, f in result["features"].items():
        assert {"overlap_area", "kl", "samples_mean", "reference_mean"} <= set(f), name
    assert 0 < (report / "report.png").stat().st_size < 500_000
    assert "mean overlap area" in (report / "index.html").read_text().lower()
    printed = capsys.readouterr().out
    assert "mean overlap area" in printed and "skipped" in printed


def test_reference_is_decoded_from_tokens_when_sources_are_gone(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["root"] = str(tmp_path / "moved_away")
    (data / "manifest.json").write_text(json.dumps(manifest))
    pieces, kind = S.reference_pieces(data, "train")
    source, source_kind = S.reference_pieces(tiny_data, "train")
    assert (kind, source_kind) == ("decoded", "source")
    # decoded = the tokenizer's quantized copy (same-pitch overlaps merged): within 2 % of the notes
    for decoded, original in zip(pieces, source, strict=True):
        assert abs(len(decoded.onset) - len(original.onset)) <= 0.02 * len(original.onset)


def test_reference_cache_is_reused_and_keyed_by_data(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("AURL_CACHE", str(tmp_path / "cache"))
    names = list(S.registered_features())
    first, _ = S.reference_table(tiny_data, "train", names)
    assert len(list((tmp_path / "cache" / "eval").glob("*.npz"))) == 1
    calls = []
    monkeypatch.setattr(S, "reference_pieces", lambda *a: calls.append(a))
    second, _ = S.reference_table(tiny_data, "train", names)
    assert calls == []
    for name in names:
        np.testing.assert_array_equal(first.values[name], second.values[name])


def test_missing_reference_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        S.reference_table(tmp_path, "test", ["pitch_range"], cache=False)
    assert main(["evaluate", "--samples", str(tmp_path)]) == 2
    assert "--samples needs --reference" in capsys.readouterr().err
    assert main(["evaluate", "--samples", str(tmp_path), "--reference", str(tmp_path)]) == 2
    assert "manifest.json: not found" in capsys.readouterr().err


def test_real_midi_folder_evaluates_every_loadable_file(shared_datasets):
    folder = shared_datasets / "real_midi"
    pieces, skipped = S.load_folder(folder)
    assert len(pieces) >= 25
    assert {Path(s["path"]).name for s in skipped} >= {"ValueError_Control168.mid", "empty.mid"}
    base = [n for n, spec in S.registered_features().items() if spec.fn.__module__ == BASE]
    table = S.feature_table(pieces, base)  # this module's features (analysis ones test themselves)
    for name in base:
        assert np.isfinite(table.values[name]).all(), name
    assert np.isfinite(table.values["groove_consistency"]).all()
    assert np.isfinite(table.values["notes_per_second"]).all()


def test_runner_picks_up_features_registered_by_the_analysis_module(tmp_path, monkeypatch):
    from aurl.evaluation import features as F

    (tmp_path / "fake_analysis_features.py").write_text(
        "from aurl.evaluation.features import feature\n"
        "@feature('fake_note_count', unit='count', description='notes')\n"
        "def fake_note_count(piece):\n"
        "    return float(len(piece.onset))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(S, "ANALYSIS_FEATURES", "fake_analysis_features")
    try:
        assert "fake_note_count" in S.registered_features()
    finally:
        F.FEATURES.pop("fake_note_count", None)
    monkeypatch.setattr(S, "ANALYSIS_FEATURES", "no_such_module_here")
    assert "fake_note_count" not in S.registered_features()  # absent module: the base features
