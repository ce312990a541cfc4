"""Phrase boundaries of the Bach chorales against their fermatas (the chorales' own phrase marks).

    .venv/bin/python benchmarks/bench_bach_phrases.py      # ~1 minute on 2 cores

The chorales of the prepared Bach dataset's validation and test splits (``aurl prepare bach --out
data/bach``; the structure networks are fitted on its training split only) go through
``analyze_score`` from the MIDI files ``aurl prepare`` converts; the reference phrase ends are the
ends of the soprano's fermata notes in music21's score of the same chorale. Boundary F-measure
(mir_eval.segment.detection, first and last boundary trimmed) with a window of 0.75 s = 1.5 beats
at the files' 120 quarter notes a minute: a phrase that ends on beat 3 and restarts on the bar
line after a one-beat pickup counts as found. Floors from the same run: a boundary every 2 bars
and every 4 bars of the inferred bars.

The same run checks the global key (the key covering most time) of the default analysis and of the
profile HMM (``KeyConfig(method="profiles")``) against the key the notation states: key signature
plus the bass's last note (``notated_key``; chorales whose bass ends on neither the signature's
major tonic nor its relative minor are left out). The key network's fit reads the notated keys of
the training split's chorales only; the profile HMM never saw a chorale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mir_eval
import numpy as np

from aurl.analysis.key import KeyConfig, estimate_keys, global_key, key_label
from aurl.analysis.notes import score_notes
from aurl.analysis.run import analyze_score, one_thread_worker
from aurl.data.corpus import bach_midi_dir
from aurl.data.midi_io import load_score

WINDOW = 0.75
RESULTS = Path(__file__).resolve().parent / "results" / "bach_phrases.json"


def fermata_ends(stream) -> np.ndarray:
    """Quarter-note offsets where the top part's fermata notes end (the chorale's phrase ends)."""
    import music21

    top = stream.parts[0].flatten().notes
    return np.array(
        sorted(
            {
                float(n.offset + n.quarterLength)
                for n in top
                if any(isinstance(e, music21.expressions.Fermata) for e in n.expressions)
            }
        )
    )


def notated_key(stream) -> str | None:
    """The key the notation states: key signature plus the bass's last note.

    The tonic is the signature's major tonic or its relative minor, whichever the bass ends on;
    None when it ends on neither (a modal or half-cadence ending), so those chorales are skipped.
    """
    import music21

    sigs = stream.flatten().getElementsByClass(music21.key.KeySignature)
    bass = stream.parts[-1].flatten().notes
    if not sigs or not bass:
        return None
    last = bass[-1]
    pc = min(last.pitches).pitchClass if last.isChord else last.pitch.pitchClass
    major = (7 * sigs[0].sharps) % 12
    if pc == major:
        return key_label(pc)
    if pc == (major + 9) % 12:
        return key_label(pc + 12)
    return None


def boundary_f(ref_ends: np.ndarray, est_starts: list[float], end: float) -> float:
    ref = np.array([[0.0, *ref_ends], [*ref_ends, end]]).T
    est = np.array([[0.0, *est_starts], [*est_starts, end]]).T
    return float(mir_eval.segment.detection(ref, est, window=WINDOW, trim=True)[2])


def one(path: Path) -> dict | None:
    import music21

    score, _ = load_score(path)
    chorale = music21.corpus.parse(f"bach/{path.stem}")
    seconds = 60.0 / (score.tempos[0].qpm if len(score.tempos) else 120.0)
    res = analyze_score(score)
    end = float(score.to("second").end())
    ref = fermata_ends(chorale) * seconds
    ref = ref[(ref > 0.3) & (ref < end - 0.5)]
    if len(ref) == 0:
        return None
    ours = [s["start"] for s in res["sections"][1:]]
    down = np.asarray(res["downbeats"])
    profile_keys = estimate_keys(
        notes=score_notes(score), beats=np.asarray(res["beats"]), cfg=KeyConfig(method="profiles")
    )
    return {
        "piece": path.name,
        "fermatas": len(ref),
        "boundaries": len(ours),
        "melody_notes": len(res["melody"]),
        "f": boundary_f(ref, ours, end),
        "floor_every_2_bars": boundary_f(ref, list(down[2:-1:2]), end),
        "floor_every_4_bars": boundary_f(ref, list(down[4:-1:4]), end),
        "notated_key": notated_key(chorale),
        "global_key": res["global_key"],
        "global_key_profiles": global_key(profile_keys),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bach-data", type=Path, default=Path("data/bach"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.time()
    pieces = json.loads((args.bach_data / "pieces.json").read_text())
    names = pieces["val"] + pieces["test"]
    folder = bach_midi_dir()
    with ProcessPoolExecutor(args.workers, initializer=one_thread_worker) as ex:
        rows = [r for r in ex.map(one, [folder / n for n in names]) if r is not None]
    summary = {
        "command": " ".join(["python", *sys.argv]),
        "pieces": len(rows),
        "window_seconds": WINDOW,
        **{
            k: round(float(np.mean([r[k] for r in rows])), 4)
            for k in ("f", "floor_every_2_bars", "floor_every_4_bars", "fermatas", "boundaries")
        },
        **{
            f"{k}_matches_notated": round(
                float(np.mean([r[k] == r["notated_key"] for r in rows if r["notated_key"]])), 4
            )
            for k in ("global_key", "global_key_profiles")
        },
        "pieces_with_notated_key": sum(bool(r["notated_key"]) for r in rows),
        "pieces_without_melody": sum(r["melody_notes"] == 0 for r in rows),
        "seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "pieces": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
