"""How well POP909's annotated mode can be told from its annotated chords (a ceiling for the key).

    .venv/bin/python benchmarks/key_mode_ceiling.py      # ~5 s; writes results/key_mode_ceiling.json

Four fifths of the key network's errors (BENCHMARKS.md, "Seventh pass") choose the wrong one of two
relative keys (A minor for C major and the reverse), which share their notes. This asks how often
that choice can be made right from the harmony when nothing is recognised: for every song of
001-700 with one annotated key (``key_audio.txt``), given the right pair of relative keys and the
**annotated** chords (``chord_midi.txt``), decide major or minor from seven figures: the share of
chord time on the major tonic chord, on the minor tonic chord, their difference, on the dominant
chord of each key, and whether the first and last chords are either tonic (as 0/1). Scored by
10-fold cross-validated accuracy of an L2 logistic regression (Newton steps in numpy), and of the
rule "minor when its tonic chord sounds longer". 701-800 is not read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop909_analysis_data as pop

from aurl.analysis.spelling import pitch_class

RESULTS = Path(__file__).resolve().parent / "results"


def song_figures(i: int) -> tuple[list[float], bool] | None:
    """The seven figures of song ``i`` and whether its key is minor; None for several keys."""
    d = pop.song_dir(i)
    _, keys = pop.labels(d / "key_audio.txt")
    if len(keys) != 1:
        return None
    tonic, mode = keys[0].split(":")
    minor = mode.startswith("min")
    major = (pitch_class(tonic) + 3) % 12 if minor else pitch_class(tonic)
    iv, labs = pop.labels(d / "chord_midi.txt")
    dur = iv[:, 1] - iv[:, 0]
    chords = [
        (pitch_class(lab.split(":")[0]), lab.split(":")[1].startswith("min"), w)
        for lab, w in zip(labs, dur, strict=True)
        if lab != "N"
    ]
    total = sum(w for *_, w in chords)

    def share(root: int, is_minor: bool) -> float:
        return sum(w for r, m, w in chords if r == root and m == is_minor) / total

    major_tonic, minor_tonic = (major, False), ((major + 9) % 12, True)
    first, last = chords[0][:2], chords[-1][:2]
    tonic_major, tonic_minor = share(*major_tonic), share(*minor_tonic)
    figures = [
        tonic_major,
        tonic_minor,
        tonic_major - tonic_minor,
        share((major + 7) % 12, False),  # V of the major key
        share((major + 4) % 12, False),  # V of the relative minor
        float(first == major_tonic) - float(first == minor_tonic),
        float(last == major_tonic) - float(last == minor_tonic),
    ]
    return figures, minor


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ w))
        hess = xb.T @ (xb * (p * (1 - p))[:, None]) + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, xb.T @ (p - y) + l2 * w)
    return w


def cv_accuracy(x: np.ndarray, y: np.ndarray, l2: float, folds: int = 10) -> float:
    fold = np.arange(len(y)) % folds
    hits = 0
    for f in range(folds):
        w = fit_logistic(x[fold != f], y[fold != f], l2)
        hits += int(
            ((np.c_[x[fold == f], np.ones((fold == f).sum())] @ w > 0) == y[fold == f]).sum()
        )
    return hits / len(y)


def main() -> None:
    rows = [r for r in map(song_figures, range(1, 701)) if r is not None]
    x = np.array([f for f, _ in rows])
    y = np.array([m for _, m in rows], dtype=np.float64)
    report = {
        "command": ".venv/bin/python benchmarks/key_mode_ceiling.py",
        "songs_with_one_key": len(y),
        "minor_share": round(float(y.mean()), 3),
        "rule_minor_tonic_chord_longer": round(float(((x[:, 1] > x[:, 0]) == y).mean()), 3),
        "logistic_10fold_by_l2": {str(l2): round(cv_accuracy(x, y, l2), 3) for l2 in (0.1, 1, 10)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "key_mode_ceiling.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
