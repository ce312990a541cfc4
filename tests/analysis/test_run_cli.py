"""``aurl analyze`` end to end: JSON schema, pictures, a corrupt file in a folder, a real song."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mir_eval
import numpy as np
import symusic

from aurl.analysis.run import analyze_score
from aurl.cli import main

POP909_008 = Path(__file__).resolve().parents[1] / "data" / "pop909" / "008"


def _merged_008() -> symusic.Score:
    score = symusic.Score(POP909_008 / "008.mid")
    merged = symusic.Score(score.ticks_per_quarter)
    merged.tempos = score.tempos
    track = symusic.Track()
    for t in score.tracks:
        track.notes.extend(t.notes)
    track.notes.sort()
    merged.tracks.append(track)
    return merged


def test_folder_with_a_corrupt_file_reports_it_and_analyses_the_rest(tmp_path, test_midi_dir):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(test_midi_dir / "corrupt_control168.mid", folder / "bad.mid")
    shutil.copy(test_midi_dir / "etude_no4.mid", folder / "sub" / "etude.mid")
    shutil.copy(test_midi_dir / "multitrack_drums.mid", folder / "band.mid")
    out, report = tmp_path / "a.json", tmp_path / "pics"
    assert (
        main(
            ["analyze", str(folder), "--json", str(out), "--report", str(report), "--workers", "2"]
        )
        == 0
    )
    files = {Path(f["path"]).name: f for f in json.loads(out.read_text())["files"]}
    assert set(files) == {"bad.mid", "etude.mid", "band.mid"}
    assert (
        "bad.mid" in files["bad.mid"]["error"] and "control value 168" in files["bad.mid"]["error"]
    )
    for name in ("etude.mid", "band.mid"):
        f = files[name]
        assert "error" not in f
        assert f["beats"] == sorted(f["beats"]) and set(f["downbeats"]) <= set(f["beats"])
        for field in ("key", "chords", "sections"):
            assert f[field] and all(set(x) == {"start", "end", "label"} for x in f[field])
            assert all(x["start"] < x["end"] for x in f[field])
        assert f["key"][0]["label"].split(":")[1] in ("maj", "min")
        assert all(set(m) == {"start", "end", "pitch"} for m in f["melody"])
        assert all(set(m) == {"pattern", "occurrences"} for m in f["motifs"])
        assert (report / (Path(name).stem + ".png")).stat().st_size > 10_000


def test_single_missing_file_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.mid"), "--json", str(tmp_path / "a.json")]) == 2
    assert "nope.mid: no such file or folder" in capsys.readouterr().err


def test_real_pop909_song_merged_into_one_track():
    """Song 008 with its tracks merged: chords, key, beats and melody against POP909's answers."""
    score = _merged_008()
    res = analyze_score(score)
    ref_beats = np.loadtxt(POP909_008 / "beat_midi.txt")[:, 0]
    assert mir_eval.beat.f_measure(ref_beats, np.array(res["beats"])) > 0.95
    assert res["global_key"] == "Eb:maj"  # key_audio.txt
    ref_iv, ref_lab = [], []
    for line in (POP909_008 / "chord_midi.txt").read_text().splitlines():
        a, b, lab = line.split()
        ref_iv.append((float(a), float(b)))
        ref_lab.append(lab)
    ref_iv = np.array(ref_iv)
    est_iv = np.array([[c["start"], c["end"]] for c in res["chords"]])
    est_iv, est_lab = mir_eval.util.adjust_intervals(
        est_iv, [c["label"] for c in res["chords"]], ref_iv.min(), ref_iv.max(), "N", "N"
    )
    iv, r, e = mir_eval.util.merge_labeled_intervals(ref_iv, ref_lab, est_iv, est_lab)
    majmin = mir_eval.chord.weighted_accuracy(
        mir_eval.chord.majmin(r, e), mir_eval.util.intervals_to_durations(iv)
    )
    assert majmin > 0.85
    sec = symusic.Score(POP909_008 / "008.mid").to("second")
    ref = next(t for t in sec.tracks if t.name == "MELODY").notes.numpy()
    est_on = np.array([m["start"] for m in res["melody"]])
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        np.stack([ref["time"], ref["time"] + ref["duration"] + 0.01], axis=1),
        mir_eval.util.midi_to_hz(ref["pitch"].astype(float)),
        np.stack([est_on, est_on + 0.1], axis=1),
        mir_eval.util.midi_to_hz(np.array([m["pitch"] for m in res["melody"]], dtype=float)),
        onset_tolerance=0.05,
        offset_ratio=None,
    )
    assert f1 > 0.6


def test_analysis_never_imports_models_training_or_torch():
    import subprocess
    import sys

    code = (
        "import sys, aurl.analysis.run, aurl.analysis.report; "
        "bad = [m for m in sys.modules if m.startswith(('aurl.models', 'aurl.training', 'torch'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
