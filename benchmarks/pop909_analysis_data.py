"""POP909 as a user would hand it to ``aurl analyze``: all tracks merged into one, names removed.

Shared by ``bench_analysis.py`` and ``fit_chord_model.py``. The tempo map is kept (a DAW export
keeps it); the time signature is kept too, though POP909's is unreliable and the analysis ignores it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import symusic

from aurl.data.midi_io import load_score

POP909 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "pop909"


def song_dir(i: int) -> Path:
    return POP909 / f"{i:03d}"


def merge_tracks(score: symusic.Score) -> symusic.Score:
    """One unnamed piano track holding every note of ``score``; tempo and meter events kept."""
    out = symusic.Score(score.ticks_per_quarter)
    out.tempos = score.tempos
    out.time_signatures = score.time_signatures
    track = symusic.Track()
    for t in score.tracks:
        track.notes.extend(t.notes)
    track.notes.sort()
    out.tracks.append(track)
    return out


def merged_score(i: int) -> symusic.Score:
    score, _ = load_score(song_dir(i) / f"{i:03d}.mid")
    return merge_tracks(score)


def melody_track(i: int) -> np.ndarray:
    """(n, 3) onset s, offset s, pitch of the MELODY track (the melody ground truth)."""
    score, _ = load_score(song_dir(i) / f"{i:03d}.mid")
    sec = score.to("second")
    track = next(t for t in sec.tracks if t.name.strip().upper() == "MELODY")
    a = track.notes.numpy()
    return np.stack([a["time"], a["time"] + np.maximum(a["duration"], 0.01), a["pitch"]], axis=1)


def labels(path: Path) -> tuple[np.ndarray, list[str]]:
    """Intervals and labels of a POP909 ``start end label`` text file."""
    iv, lab = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            iv.append((float(parts[0]), float(parts[1])))
            lab.append(parts[2])
    return np.asarray(iv), lab


def chords(i: int) -> tuple[np.ndarray, list[str]]:
    return labels(song_dir(i) / "chord_midi.txt")


def keys(i: int) -> tuple[np.ndarray, list[str]]:
    return labels(song_dir(i) / "key_audio.txt")


def beats(i: int) -> np.ndarray:
    """(B, 3) time, flag of every 2nd beat, flag of every 4th beat (``beat_midi.txt``)."""
    return np.loadtxt(song_dir(i) / "beat_midi.txt", ndmin=2)


@lru_cache(maxsize=1)
def structure() -> dict:
    return json.loads((POP909 / "structure.json").read_text())
