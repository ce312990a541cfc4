"""Exact round trip: for every loadable file, ``decode(encode(s))`` against ``preprocess(s)``.

Notes are compared as multisets of ``(program, onset, pitch, duration, velocity)`` (drums as program
-1), in ticks of the tokenizer's own resolution, velocities already folded into bins by
``preprocess``. A file is exact when both multisets are equal. ``aurl roundtrip`` writes the report
as JSON and prints :func:`render`.

Files are loaded in worker processes (:mod:`aurl.data.filepool`) under a per-file time limit: a file
that hangs is reported as ``timeout after N s``, one whose worker dies as ``worker died (...)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from symusic import Score

from aurl.config import TokenizerConfig, atomic_write_text
from aurl.data import midi_io
from aurl.data.corpus import bach_midi_dir, collection_files
from aurl.data.filepool import DEFAULT_TIMEOUT_S, map_files
from aurl.data.tokenizers import MusicTokenizer

log = logging.getLogger(__name__)

MAX_LISTED_MISMATCHES = 5


def note_tuples(score: Score) -> Counter:
    """Multiset of ``(program, onset, pitch, duration, velocity)``; drums have program -1."""
    return Counter(
        (-1 if t.is_drum else t.program, n.time, n.pitch, n.duration, n.velocity)
        for t in score.tracks
        for n in t.notes
    )


def compare(tokenizer: MusicTokenizer, score: Score) -> dict:
    """Round-trip one score: ``{"exact", "notes", "mismatches": [...], "mismatch_count"}``."""
    expected = note_tuples(tokenizer.preprocess(score))
    got = note_tuples(tokenizer.decode(tokenizer.encode(score)))
    missing, extra = expected - got, got - expected
    keys = ("program", "onset", "pitch", "duration", "velocity")
    listed = [{"kind": "missing", **dict(zip(keys, k, strict=True))} for k in missing] + [
        {"kind": "extra", **dict(zip(keys, k, strict=True))} for k in extra
    ]
    return {
        "exact": not missing and not extra,
        "notes": sum(expected.values()),
        "matched": sum((expected & got).values()),
        "mismatch_count": sum(missing.values()) + sum(extra.values()),
        "mismatches": listed[:MAX_LISTED_MISMATCHES],
    }


def resolve_input(input: str | os.PathLike) -> list[Path]:
    """Files of a folder (recursive), a single file, or the Bach corpus for the word ``bach``."""
    if str(input) == "bach":
        return midi_io.find_music_files(bach_midi_dir())
    if str(input).startswith("music21:"):
        return collection_files(str(input).removeprefix("music21:"))[1]
    path = Path(input)
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (or use the word 'bach')")
    return midi_io.find_music_files(path)


def roundtrip(
    input: str | os.PathLike,
    tok_cfg: TokenizerConfig,
    *,
    json_path: str | os.PathLike | None = None,
    tokenizer: MusicTokenizer | None = None,
    workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT_S,
    loader=midi_io.load_score,
) -> dict:
    """Round-trip every file under ``input``; BPE (``bpe_vocab_size``) is trained on these files.

    ``timeout``: seconds one file may take to load (0 = no limit); ``loader`` as in ``prepare``.
    """
    files = resolve_input(input)
    started = time.perf_counter()
    tok = tokenizer or MusicTokenizer(tok_cfg)
    loaded: list[tuple[Path, Score]] = []
    failed = []
    slow = []
    outcomes = map_files(
        _load_one, [(str(p), loader) for p in files], workers=workers, timeout=timeout
    )
    for out in sorted(outcomes, key=lambda o: o.index):
        path = files[out.index]
        slow.append((out.seconds, str(path)))
        if out.error is not None:
            failed.append({"path": str(path), "reason": out.error})
        elif isinstance(out.value, str):
            failed.append({"path": str(path), "reason": out.value})
        else:
            loaded.append((path, out.value))
    if tok_cfg.bpe_vocab_size and not tok.is_trained and loaded:
        tok.train_bpe((s for _, s in loaded), tok_cfg.bpe_vocab_size)
    rows = []
    for path, score in loaded:
        row = compare(tok, score)
        rows.append({"path": str(path), **row})
        if not row["exact"]:
            log.warning("%s: %d of %d notes differ", path, row["mismatch_count"], row["notes"])
    notes = sum(r["notes"] for r in rows)
    report = {
        "tokenizer": {
            "kind": tok_cfg.kind,
            "bpe_vocab_size": tok_cfg.bpe_vocab_size,
            "hash": tok.hash,
        },
        "files": rows,
        "summary": {
            "files": len(rows),
            "files_inexact": sum(not r["exact"] for r in rows),
            "notes": notes,
            "note_match_rate": (sum(r["matched"] for r in rows) / notes) if notes else 1.0,
            "failed": failed,
            "slowest": [{"path": p, "seconds": round(t, 2)} for t, p in sorted(slow)[::-1][:5]],
            "seconds": round(time.perf_counter() - started, 2),
        },
    }
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=1))
    return report


def _load_one(item: tuple[str, object]) -> Score | str:
    """Load one file: the score, or the reason it cannot be loaded (runs in a worker)."""
    path, loader = item
    try:
        return loader(path)[0]
    except midi_io.MidiLoadError as err:
        return str(err).removeprefix(f"{path}: ")


def render(report: dict) -> str:
    """A short human summary of a :func:`roundtrip` report."""
    s, t = report["summary"], report["tokenizer"]
    bpe = f" + BPE {t['bpe_vocab_size']}" if t["bpe_vocab_size"] else ""
    lines = [
        f"roundtrip {t['kind']}{bpe}: {s['files']} files, {s['files_inexact']} inexact, "
        f"{s['notes']} notes, note match {100 * s['note_match_rate']:.3f} %, "
        f"{len(s['failed'])} not loadable ({s['seconds']} s)"
    ]
    lines += [
        f"  inexact: {r['path']} ({r['mismatch_count']} notes)"
        for r in report["files"]
        if not r["exact"]
    ][:10]
    lines += [f"  failed: {f['path']}: {f['reason']}" for f in s["failed"][:5]]
    if s.get("slowest"):
        lines.append(
            "  slowest loads: "
            + ", ".join(f"{x['path']} {x['seconds']:.1f}s" for x in s["slowest"])
        )
    return "\n".join(lines)
