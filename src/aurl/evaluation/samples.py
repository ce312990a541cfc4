"""``aurl evaluate --samples DIR --reference DATA``: a folder of MIDI against a prepared split.

The runner: load every file of the folder (a file that cannot be read is reported with its reason
and skipped; the folder never stops), compute the registered features of each piece
(:mod:`aurl.evaluation.features`, plus :mod:`aurl.evaluation.analysis_features` when that module
exists), compute the same features on the reference split, compare the two sets
(:mod:`aurl.evaluation.compare`) and write the JSON (and the report page).

The reference pieces are the split's **source files** (``manifest.root`` + ``pieces.json``) when
they are still on disk — what the corpus really is, with its tempo map, time signatures and tracks —
else the prepared token pieces decoded with the prepared tokenizer. Reference features are cached
under ``~/.cache/aurl/eval`` (or ``$AURL_CACHE/eval``), keyed by the prepared data's ``cache_key``,
the split, the source kind and the source code of every feature, so a changed feature is recomputed.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aurl.evaluation import compare
from aurl.evaluation.features import (
    FEATURES,
    FeatureSpec,
    Piece,
    compute_features,
    piece_from_score,
)

log = logging.getLogger(__name__)

ANALYSIS_FEATURES = "aurl.evaluation.analysis_features"


def registered_features() -> dict[str, FeatureSpec]:
    """The features registered now, after importing the optional analysis-based ones."""
    try:
        importlib.import_module(ANALYSIS_FEATURES)
    except ModuleNotFoundError as exc:
        if exc.name != ANALYSIS_FEATURES:  # the module exists but one of its imports is missing
            raise
    return dict(FEATURES)


@dataclass
class FeatureTable:
    """Per-piece feature values of one set: ``values[name]`` is (N,) or (N, D); NaN = undefined."""

    names: list[str]  # piece names, one per row
    values: dict[str, np.ndarray]
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{path, reason}]

    def __len__(self) -> int:
        return len(self.names)

    def vectors(self, features: list[str]) -> np.ndarray:
        """(N, sum of dims): the features side by side (the Fréchet distance's input)."""
        cols = [self.values[f].reshape(len(self), -1) for f in features]
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(self), 0))

    def widths(self, features: list[str]) -> list[int]:
        """Columns of each feature in :meth:`vectors` (1 for a scalar, the bins of a histogram)."""
        return [self.values[f].reshape(len(self), -1).shape[1] for f in features]


def feature_table(pieces: list[Piece], features: list[str]) -> FeatureTable:
    """Compute ``features`` on every piece (pure)."""
    rows = [compute_features(p, features) for p in pieces]
    values = {}
    for f in features:
        col = [np.asarray(r[f], dtype=np.float64) for r in rows]
        values[f] = np.stack(col) if col else np.zeros((0,))
    return FeatureTable([p.name for p in pieces], values)


def load_folder(folder: str | os.PathLike) -> tuple[list[Piece], list[dict[str, str]]]:
    """Pieces of every MIDI file under ``folder``; unreadable or note-less files are skipped.

    Only ``.mid``/``.midi`` are read: ``aurl generate`` writes a MusicXML copy beside each MIDI
    file, which would otherwise count every piece twice.
    """
    from aurl.data.midi_io import MIDI_SUFFIXES, MidiLoadError, find_music_files, load_score

    pieces, skipped = [], []
    paths = [p for p in find_music_files(folder) if p.suffix.lower() in MIDI_SUFFIXES]
    if not paths:
        log.warning("%s: no MIDI files (.mid/.midi)", folder)
    for path in paths:
        try:
            score, _ = load_score(path)
        except MidiLoadError as exc:
            log.warning("%s; skipped", exc)
            skipped.append({"path": str(path), "reason": exc.reason})
            continue
        piece = piece_from_score(score, name=path.name)
        if len(piece.onset) == 0:
            log.warning("%s: no notes; skipped", path)
            skipped.append({"path": str(path), "reason": "no notes"})
            continue
        pieces.append(piece)
    return pieces, skipped


def _read_prepared(data_dir: str | os.PathLike) -> tuple[dict, dict[str, list[str]]]:
    """(manifest, pieces.json) of a prepared directory, without importing torch or MidiTok."""
    root = Path(data_dir)
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `aurl prepare INPUT --out {root}` first")
    return json.loads(path.read_text()), json.loads((root / "pieces.json").read_text())


def reference_pieces(data_dir: str | os.PathLike, split: str) -> tuple[list[Piece], str]:
    """(pieces of the split, "source" or "decoded"): source MIDI when on disk, else tokens."""
    import symusic

    manifest, names = _read_prepared(data_dir)
    if split not in names:
        raise ValueError(f"{data_dir}: no split {split!r} (has {', '.join(names)})")
    if not names[split]:
        raise ValueError(f"{data_dir}: the {split} split has no pieces")
    root = Path(manifest.get("root") or "")
    paths = [root / name for name in names[split]]
    if all(p.suffix.lower() in (".mid", ".midi") and p.is_file() for p in paths):
        return [piece_from_score(symusic.Score(str(p)), name=p.name) for p in paths], "source"
    log.info("%s: source files not on disk under %s; decoding the token pieces", data_dir, root)
    from aurl.data.dataset import PreparedData

    data = PreparedData(data_dir)
    part, tok = data.split(split), data.tokenizer
    pieces = [
        piece_from_score(tok.decode(part.piece(i).tolist()), name=part.names[i])
        for i in range(len(part))
    ]
    return pieces, "decoded"


def _cache_dir() -> Path:
    base = os.environ.get("AURL_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "aurl") / "eval"


def _features_hash(specs: dict[str, FeatureSpec]) -> str:
    h = hashlib.sha1()
    for name in sorted(specs):
        h.update(name.encode())
        try:
            h.update(inspect.getsource(specs[name].fn).encode())
        except (OSError, TypeError):
            h.update(repr(specs[name].fn).encode())
    h.update(inspect.getsource(piece_from_score).encode())
    return h.hexdigest()[:12]


def reference_table(
    data_dir: str | os.PathLike, split: str, features: list[str], *, cache: bool = True
) -> tuple[FeatureTable, str]:
    """Reference features (cached, see the module docstring) and the reference kind."""
    specs = {f: FEATURES[f] for f in features}
    manifest, _ = _read_prepared(data_dir)
    key = f"{manifest.get('cache_key', 'nokey')}-{split}-{_features_hash(specs)}"
    path = _cache_dir() / f"{key}.npz"
    if cache and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if Path(meta["data"]) == Path(data_dir).resolve():
                table = FeatureTable(meta["names"], {f: z[f"f_{f}"] for f in features})
                return table, meta["kind"]
    pieces, kind = reference_pieces(data_dir, split)
    table = feature_table(pieces, features)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"names": table.names, "kind": kind, "data": str(Path(data_dir).resolve())}
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, meta=json.dumps(meta), **{f"f_{f}": table.values[f] for f in features})
        tmp.replace(path)
    return table, kind


def compare_tables(
    samples: FeatureTable, reference: FeatureTable, specs: dict[str, FeatureSpec]
) -> dict:
    """The set-level figures: per feature and overall (see :mod:`aurl.evaluation.compare`)."""
    if len(samples) == 0:
        raise ValueError(
            "no sample pieces to evaluate (every file was skipped or the folder is empty)"
        )
    if len(reference) < 2:
        raise ValueError("the reference needs at least 2 pieces (intra-set distances)")
    per_feature = {}
    for name, spec in specs.items():
        figures = compare.compare_feature(samples.values[name], reference.values[name])
        per_feature[name] = {
            "overlap_area": figures["overlap_area"],
            "kl": figures["kl"],
            "samples_mean": compare.nanmean(samples.values[name]),
            "reference_mean": compare.nanmean(reference.values[name]),
            "kind": spec.kind,
            "unit": spec.unit,
            "time_base": spec.time_base,
            "description": spec.description,
        }
    oas = [v["overlap_area"] for v in per_feature.values() if np.isfinite(v["overlap_area"])]
    kls = [v["kl"] for v in per_feature.values() if np.isfinite(v["kl"])]
    names = list(specs)
    return {
        "mean_overlap_area": float(np.mean(oas)) if oas else float("nan"),
        "mean_kl": float(np.mean(kls)) if kls else float("nan"),
        "frechet_distance": compare.frechet_distance(
            samples.vectors(names), reference.vectors(names), reference.widths(names)
        ),
        "features": per_feature,
    }


def evaluate_samples(
    samples_dir: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    split: str = "test",
    json_path: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> dict:
    """Compare the music files of ``samples_dir`` with ``split`` of the prepared ``reference``."""
    from aurl.atomic import atomic_write_text

    t0 = time.perf_counter()
    specs = registered_features()
    names = list(specs)
    pieces, skipped = load_folder(samples_dir)
    samples = feature_table(pieces, names)
    samples.skipped = skipped
    t1 = time.perf_counter()
    ref, kind = reference_table(reference, split, names, cache=cache)
    t2 = time.perf_counter()
    result = compare_tables(samples, ref, specs)
    t3 = time.perf_counter()
    result.update({
        "samples": str(samples_dir),
        "reference": str(reference),
        "split": split,
        "reference_kind": kind,
        "num_samples": len(samples),
        "num_reference": len(ref),
        "skipped": skipped,
        "seconds": {"samples": t1 - t0, "reference": t2 - t1, "compare": t3 - t2},
    })  # fmt: skip
    log.info(
        "%d samples vs %d %s pieces: mean overlap area %.3f, Fréchet %.2f (%d skipped)",
        len(samples), len(ref), split, result["mean_overlap_area"], result["frechet_distance"],
        len(skipped),
    )  # fmt: skip
    if report_dir is not None:
        from aurl.evaluation.report import write_report

        result["report"] = str(write_report(result, samples, ref, specs, Path(report_dir)))
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(result, indent=2, allow_nan=True) + "\n")
    return result


def random_note_score(seed: int, bars: int = 16, tpq: int = 480):
    """A seeded piece of random notes (the "clearly not music" control of the benchmarks).

    4/4 at 120 bpm, one piano track; onsets on a 1/8-beat grid at about 4 notes per beat, pitches
    uniform in 36..84, durations uniform in 1/8..4 beats (Bach chorales: ~4 notes per beat).
    """
    import symusic

    rng = np.random.default_rng(seed)
    beats = 4 * bars
    n = int(4 * beats)
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track("random", program=0, is_drum=False)
    onsets = np.sort(rng.integers(0, beats * 8, n)) * tpq // 8
    durations = rng.integers(1, 33, n) * tpq // 8
    pitches = rng.integers(36, 85, n)
    for t, d, p in zip(onsets, durations, pitches, strict=True):
        track.notes.append(symusic.Note(int(t), int(d), int(p), 80))
    score.tracks.append(track)
    return score


def render_table(result: dict) -> str:
    """A plain-text table of :func:`evaluate_samples`' result, worst feature first."""
    lines = [
        f"{result['num_samples']} samples vs {result['num_reference']} pieces "
        f"({result['split']} split, {result['reference_kind']})",
        f"mean overlap area {result['mean_overlap_area']:.3f}   mean KL {result['mean_kl']:.3f}"
        f"   Frechet distance {result['frechet_distance']:.2f}",
        f"{'feature':30s} {'overlap':>7s} {'KL':>7s} {'samples':>9s} {'reference':>9s}  unit",
    ]
    for name, f in sorted(result["features"].items(), key=lambda kv: kv[1]["overlap_area"]):
        s, r = f["samples_mean"], f["reference_mean"]
        sm = "hist" if isinstance(s, list) else f"{s:9.3f}"
        rm = "hist" if isinstance(r, list) else f"{r:9.3f}"
        lines.append(
            f"{name:30s} {f['overlap_area']:7.3f} {f['kl']:7.3f} {sm:>9s} {rm:>9s}  {f['unit']}"
        )
    lines += [f"skipped {s['path']}: {s['reason']}" for s in result["skipped"]]
    if "report" in result:
        lines.append(f"report: {result['report']}")
    return "\n".join(lines)
