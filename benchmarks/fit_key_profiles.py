"""Learn the ``pop909`` key profiles in ``aurl.analysis.key.PROFILES`` from POP909 001-700.

    .venv/bin/python benchmarks/fit_key_profiles.py          # ~1-2 minutes on 2 cores

For each song (tracks merged) and each annotated key span (``key_audio.txt``): the time-weighted
pitch-class profile and the bass profile of the notes in that span, rotated so the tonic is at 0,
each normalised to sum 1, averaged over spans by mode. Prints the four 12-tuples to paste into
key.py. Songs 701-800 (held out) are never read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop909_analysis_data as pop

from aurl.analysis.notes import bass_chroma, score_notes, segment_chroma
from aurl.analysis.spelling import pitch_class


def tonic_pc(label: str) -> tuple[int, str]:
    tonic, mode = label.split(":")
    return pitch_class(tonic), mode[:3]


def main() -> None:
    print(f"command: {' '.join(sys.argv)}")
    acc = {m: [np.zeros(12), np.zeros(12), 0] for m in ("maj", "min")}
    for i in range(1, 701):
        notes = score_notes(pop.merged_score(i))
        iv, lab = pop.keys(i)
        for (a, b), label in zip(iv, lab, strict=True):
            t, mode = tonic_pc(label)
            bounds = np.array([a, b])
            for k, prof in enumerate(
                (segment_chroma(notes, bounds)[0], bass_chroma(notes, bounds)[0])
            ):
                if prof.sum() > 0:
                    acc[mode][k] += np.roll(prof / prof.sum(), -t) * (b - a)
            acc[mode][2] += b - a
    for mode, (dur, bass, secs) in acc.items():
        print(f"{mode} ({secs:.0f} s)")
        print("  sounding:", tuple(np.round(dur / dur.sum(), 3).tolist()))
        print("  bass:    ", tuple(np.round(bass / bass.sum(), 3).tolist()))


if __name__ == "__main__":
    main()
