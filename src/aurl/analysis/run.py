"""``aurl analyze``: every analyzer on one score, and the folder runner (parallel, per-file errors).

The result of one file is a plain dict (JSON-ready; all times in seconds on the file's timeline):
``path``, ``beats``, ``downbeats``, ``beats_per_bar``, ``beat_source``, ``key`` / ``chords`` /
``sections`` (lists of ``{start, end, label}``; chord roots spelled as degrees of the key around
them, :mod:`aurl.analysis.spelling`), ``global_key``, ``melody`` (``{start, end,
pitch}``), ``motifs`` (``{pattern, occurrences: [{start, end}]}``); or ``path`` and ``error``
when the file cannot be read or analysed.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import symusic

from aurl.analysis.beats import track_beats
from aurl.analysis.chords import ChordSegment, recognize_chords
from aurl.analysis.key import KeyConfig, KeySegment, estimate_keys, global_key
from aurl.analysis.melody import extract_melody, melody_notes
from aurl.analysis.motifs import MotifConfig, find_motifs
from aurl.analysis.notes import score_notes
from aurl.analysis.spelling import spell_chord
from aurl.analysis.structure import StructureConfig, find_sections

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of each analyzer (defaults are the ones measured in BENCHMARKS.md)."""

    key: KeyConfig = field(default_factory=KeyConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    motifs: MotifConfig = field(default_factory=MotifConfig)


def _r(x: float) -> float:
    return round(float(x), 4)


def key_at(keys: list[KeySegment], segment: ChordSegment) -> str | None:
    """The label of the key segment around ``segment``'s midpoint (None without keys)."""
    mid = (segment.start + segment.end) / 2
    for k in keys:
        if k.start <= mid < k.end:
            return k.label
    return (
        min(keys, key=lambda k: min(abs(k.start - mid), abs(k.end - mid))).label if keys else None
    )


def analyze_score(score: symusic.Score, cfg: AnalysisConfig | None = None) -> dict:
    """All analyses of one score as a JSON-ready dict (without ``path``)."""
    cfg = cfg or AnalysisConfig()
    notes = score_notes(score)
    mel_idx = extract_melody(notes=notes) if len(notes) else None
    bt = track_beats(score, notes, melody=mel_idx)
    keys = estimate_keys(notes=notes, beats=bt.beats, downbeats=bt.downbeats, cfg=cfg.key)
    chords = (
        recognize_chords(notes=notes, beats=bt.beats, downbeats=bt.downbeats) if len(notes) else []
    )
    mel = melody_notes(notes, mel_idx) if mel_idx is not None else []
    sections = (
        find_sections(mel, chords, bt.beats, bt.downbeats, notes.end, cfg.structure)
        if len(notes)
        else []
    )
    motifs = find_motifs(
        np.array([m.start for m in mel]),
        np.array([m.end for m in mel]),
        np.array([m.pitch for m in mel]),
        cfg.motifs,
    )
    return {
        "beats": [_r(t) for t in bt.beats],
        "downbeats": [_r(t) for t in bt.downbeats],
        "beats_per_bar": bt.beats_per_bar,
        "beat_source": bt.source,
        "global_key": global_key(keys),
        "key": [{"start": _r(k.start), "end": _r(k.end), "label": k.label} for k in keys],
        "chords": [
            {"start": _r(c.start), "end": _r(c.end), "label": spell_chord(c.label, key_at(keys, c))}
            for c in chords
        ],
        "melody": [{"start": _r(m.start), "end": _r(m.end), "pitch": m.pitch} for m in mel],
        "sections": [{"start": _r(s.start), "end": _r(s.end), "label": s.label} for s in sections],
        "motifs": [
            {
                "pattern": m.pattern,
                "occurrences": [{"start": _r(o.start), "end": _r(o.end)} for o in m.occurrences],
            }
            for m in motifs
        ],
    }


def analyze_file(
    path: str | os.PathLike, cfg: AnalysisConfig | None = None, report_dir: Path | None = None
) -> dict:
    """Analyse one file; never raises for bad input: returns ``{path, error}`` instead."""
    from aurl.data.midi_io import MidiLoadError, load_score

    entry: dict = {"path": str(path)}
    try:
        score, _ = load_score(path)
    except MidiLoadError as err:
        log.warning("%s", err)
        return {**entry, "error": str(err)}
    try:
        entry.update(analyze_score(score, cfg))
    except Exception as err:
        log.warning("%s: analysis failed (%s: %s)", path, type(err).__name__, err)
        return {**entry, "error": f"{path}: analysis failed ({type(err).__name__}: {err})"}
    if report_dir is not None:
        from aurl.analysis.report import draw_report

        try:
            entry["report"] = str(
                draw_report(score, entry, report_dir / (Path(path).stem + ".png"))
            )
        except Exception as err:
            log.warning("%s: report picture failed (%s)", path, err)
    return entry


def _task(args: tuple[str, AnalysisConfig, Path | None]) -> dict:
    return analyze_file(*args)


def one_thread_worker() -> None:
    """Pool initializer: one thread per worker process, so that ``workers`` processes do not
    oversubscribe the cores: one torch thread (the networks), and one BLAS thread for numpy.

    The BLAS limit matters as much as torch's: numpy's OpenBLAS threads spin-wait between the
    small matrix products of the melody scorer, and in a worker they doubled the melody's CPU time
    (68 -> 39 ms a song on POP909 701-740) while shortening its wall time by only 4 ms."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def analyze_paths(
    input_path: str | os.PathLike,
    cfg: AnalysisConfig | None = None,
    workers: int = 1,
    report_dir: Path | None = None,
) -> dict:
    """``{"files": [...]}`` for a file or every music file under a folder (recursive, sorted)."""
    from aurl.data.midi_io import find_music_files

    cfg = cfg or AnalysisConfig()
    root = Path(input_path)
    if root.is_dir():
        paths = find_music_files(root)
    elif root.exists():
        paths = [root]
    else:
        raise FileNotFoundError(f"{root}: no such file or folder")
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), cfg, report_dir) for p in paths]
    if workers <= 1 or len(jobs) <= 1:
        files = [_task(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=one_thread_worker) as pool:
            files = list(pool.map(_task, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    return {"files": files}


def write_json(result: dict, path: Path) -> None:
    from aurl.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
