"""``aurl prepare``: a folder of music files (or ``bach``) -> sharded memmap tokens + manifest.json.

Pipeline (docs/data_format.md has the on-disk format):
1. list the input files (sorted); keep this slice's files (``num_shards``/``shard_index``, by a hash of
   the relative path, so every slice is stable when files are added);
2. tokenize file by file in ``workers`` processes (:mod:`aurl.data.filepool`: a file past
   ``timeout`` seconds, or whose worker dies, is reported as failed and its worker replaced; the
   progress bar moves per file); every ``CHUNK_FILES`` consecutive files are committed as one part
   file (temporary file + rename) under ``OUT/.parts-<key>/`` once all are done, so an interrupted
   run resumes where it stopped. For MIDI, tokenizing, not parsing, bounds this (MidiTok encode is
   ~200x the symusic parse, FACTS.md); for notation, reading the score does (issue 14);
3. split by piece group (``corpus.group_key``, or a ``music21:NAME`` collection's own grouping;
   a hash, so adding files never reshuffles others);
4. optional BPE: learn merges on the train split's base ids, then encode every piece from its ids;
5. write ``tokens/<split>-<k>.bin`` shards, ``<split>.index.npy``, ``pieces.json``,
   ``tokenizer.json`` and, last, ``manifest.json`` (its presence with the same ``cache_key`` means
   the directory is complete and is reused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aurl.config import TokenizerConfig, atomic_write_text, to_dict
from aurl.data import midi_io
from aurl.data.corpus import collection_files, grouper, resolve_corpus
from aurl.data.filepool import DEFAULT_TIMEOUT_S, map_files
from aurl.data.tokenizers import MusicTokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CHUNK_FILES = 32
"""Files per committed part: small enough that a resume loses little, few enough part files."""
SLOWEST_LISTED = 5
DISPATCH_WINDOW_CHUNKS = 4
"""Files are handed out largest first within windows of this many chunks."""
SHARD_TOKENS = 1 << 26
"""Tokens per shard file (128 MiB at uint16)."""
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# summary


@dataclass
class PrepareSummary:
    """What a prepare (or merge) produced; ``render()`` is the one-screen report the CLI prints."""

    out: Path
    files_ok: int
    files_failed: list[dict]
    files_repaired: int
    splits: dict[str, dict]
    tokens_per_beat: float
    lengths: dict[str, int]
    seconds: float
    reused: bool = False
    vocab_size: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    slowest: list[dict] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, out: Path, manifest: dict, reused: bool) -> PrepareSummary:
        return cls(
            out=out,
            files_ok=manifest["files_ok"],
            files_failed=manifest["files_failed"],
            files_repaired=manifest["files_repaired"],
            splits=manifest["splits"],
            tokens_per_beat=manifest["tokens_per_beat"],
            lengths=manifest["length_percentiles"],
            seconds=manifest["timings"].get("total", 0.0),
            reused=reused,
            vocab_size=manifest["vocab_size"],
            timings=manifest["timings"],
            slowest=manifest.get("slowest", []),
            ignored=manifest.get("files_ignored", {}),
        )

    def render(self) -> str:
        total = self.files_ok + len(self.files_failed)
        head = "reused cached data (same config and inputs)" if self.reused else "prepared"
        lines = [
            f"{head} in {self.out}",
            f"files: {self.files_ok} ok / {total} ({self.files_repaired} repaired, "
            f"{len(self.files_failed)} failed)",
        ]
        lines += [f"  failed: {f['path']}: {f['reason']}" for f in self.files_failed[:5]]
        if len(self.files_failed) > 5:
            lines.append(f"  ... {len(self.files_failed) - 5} more in manifest.json")
        if self.ignored:
            n = sum(self.ignored.values())
            kinds = ", ".join(f"{k} {v}" for k, v in self.ignored.items())
            lines.append(f"  ignored {n} file(s) with unsupported suffixes ({kinds})")
        if self.slowest:
            lines.append(
                "slowest: " + ", ".join(f"{s['path']} {s['seconds']:.1f}s" for s in self.slowest)
            )
        for name, s in self.splits.items():
            lines.append(
                f"{name:>5}: {s['pieces']} pieces, {s['tokens']} tokens, {s['notes']} notes"
            )
        pct = ", ".join(f"{k} {v}" for k, v in self.lengths.items())
        lines.append(
            f"vocab {self.vocab_size}; tokens per beat {self.tokens_per_beat:.2f}; length {pct}"
        )
        lines.append(
            f"time {self.seconds:.1f} s  "
            + " ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# inputs, slices, splits


def _stable_unit(text: str) -> float:
    """A hash of ``text`` mapped to [0, 1): stable across runs, machines and Python versions."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / float(1 << 48)


def _list_inputs(input: str) -> tuple[Path, list[Path]]:
    if str(input).startswith("music21:"):
        return collection_files(str(input).removeprefix("music21:"))
    root = resolve_corpus(input)
    if root is None:
        root = Path(input)
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root}: not a folder (pass a folder of music files, 'bach' or 'music21:NAME')"
            )
    return root, midi_io.find_music_files(root)


def _ignored_files(root: Path) -> dict[str, int]:
    """Files under ``root`` that prepare skips (unsupported suffix), counted by suffix."""
    counts: dict[str, int] = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if p.suffix.lower() in midi_io.SUPPORTED_SUFFIXES or any(x.startswith(".") for x in rel):
            continue
        if p.is_file():
            key = p.suffix.lower() or "(none)"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def in_slice(relpath: str, num_shards: int, shard_index: int) -> bool:
    """Whether a file (by relative path) belongs to slice ``shard_index`` of ``num_shards``."""
    return num_shards == 1 or int(_stable_unit("slice:" + relpath) * num_shards) == shard_index


def assign_splits(
    groups: list[str], fractions: tuple[float, float, float], seed: int, fill_empty: bool = True
) -> dict[str, str]:
    """Group -> split by a seeded hash of the group name (adding groups never moves others).

    Small corpora: when val or test would be empty and there are >= 3 groups, the groups with the
    highest hash go to the empty split(s), so a 5-file folder still has something to validate on.
    Slices (``--num-shards``) pass ``fill_empty=False``: a slice cannot see the other slices' groups,
    and merged slices must equal one full run.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not 0.99 < sum(fractions) < 1.01:
        raise ValueError(
            f"splits={fractions} must be three fractions (train, val, test) summing to 1"
        )
    edges = np.cumsum(fractions)
    unit = {g: _stable_unit(f"{seed}:{g}") for g in set(groups)}
    out = {g: SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)] for g, u in unit.items()}
    ranked = sorted(unit, key=unit.get, reverse=True)
    if fill_empty and len(ranked) >= 3:
        for i, name in enumerate(("test", "val")):
            if fractions[SPLITS.index(name)] > 0 and name not in out.values():
                out[ranked[i]] = name
    return out


def _cache_key(
    files: list[tuple[str, Path]], cfg: TokenizerConfig, splits, seed, num_shards, shard_index
) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [FORMAT_VERSION, to_dict(cfg), list(splits), seed, num_shards, shard_index]
        ).encode()
    )
    for rel, path in files:
        st = path.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# tokenizing files (in worker processes)

Loader = Callable[[str], tuple]
"""``path -> (symusic.Score, RepairReport)``, raising ``MidiLoadError``; ``midi_io.load_score``."""

_WORKER_TOK: MusicTokenizer | None = None
_WORKER_LOAD: Loader = midi_io.load_score


def _init_worker(cfg_dict: dict, loader: Loader = midi_io.load_score) -> None:
    global _WORKER_TOK, _WORKER_LOAD
    from aurl.config import from_dict

    _WORKER_TOK = MusicTokenizer(from_dict(TokenizerConfig, {**cfg_dict, "bpe_vocab_size": 0}))
    _WORKER_LOAD = loader


def _tokenize_file(item: tuple[str, str]) -> tuple[dict, np.ndarray | None]:
    """Tokenize one file ``(relpath, abspath)``: (metadata, base ids or None if it failed)."""
    rel, path = item
    tok = _WORKER_TOK
    try:
        score, report = _WORKER_LOAD(path)
        base = tok.encode_base(score)
    except midi_io.MidiLoadError as err:
        return {"path": rel, "ok": False, "reason": str(err).removeprefix(f"{path}: ")}, None
    except Exception as err:
        return {
            "path": rel,
            "ok": False,
            "reason": f"tokenizer error: {type(err).__name__}: {err}",
        }, None
    beats = tok.token_beats(base)
    meta = {
        "path": rel,
        "ok": True,
        "tokens": len(base),
        "notes": tok.count_notes(base),
        "beats": float(beats[-1]) if len(beats) else 0.0,
        "repairs": dict(report.counts) if report else {},
    }
    return meta, base.astype(np.int32)


def _write_part(part_path: Path, metas: list[dict], arrays: list[np.ndarray]) -> None:
    """Commit one chunk's metadata and tokens (temporary file + rename)."""
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
    tmp = part_path.with_name(part_path.name + ".tmp.npz")
    np.savez(tmp, tokens=tokens, meta=np.frombuffer(json.dumps(metas).encode(), dtype=np.uint8))
    tmp.replace(part_path)


def _read_part(part_path: Path) -> tuple[list[dict], Iterator[np.ndarray]]:
    with np.load(part_path) as z:
        metas = json.loads(z["meta"].tobytes())
        tokens = z["tokens"]
    offsets = np.cumsum([0] + [m["tokens"] for m in metas if m["ok"]])
    return metas, (tokens[a:b] for a, b in itertools.pairwise(offsets))


# ---------------------------------------------------------------------------------------------
# writing the prepared directory


def write_dataset(
    out: Path,
    tok: MusicTokenizer,
    pieces: Callable[[str], Iterator[tuple[str, np.ndarray]]],
    manifest: dict,
    started: float,
) -> dict:
    """Write shards, index, pieces.json, tokenizer.json, then manifest.json (last = complete).

    ``pieces(split)`` yields ``(relpath, final ids)`` in relpath order, one piece in memory at a
    time; ``manifest`` is completed with per-split counts and written.
    """
    write_started = time.perf_counter()
    dtype = np.uint16 if tok.vocab_size < (1 << 16) else np.uint32
    build = out / f".build-{manifest['cache_key']}"
    shutil.rmtree(build, ignore_errors=True)
    (build / "tokens").mkdir(parents=True)
    split_stats, names, lengths = {}, {}, []
    for split in SPLITS:
        rows, shard, shard_fill, fh = [], 0, 0, None
        names[split] = []
        notes = tokens = 0
        for rel, ids in pieces(split):
            if fh is None or (shard_fill and shard_fill + len(ids) > SHARD_TOKENS):
                if fh is not None:
                    fh.close()
                    shard += 1
                fh = (build / "tokens" / f"{split}-{shard:05d}.bin").open("wb")
                shard_fill = 0
            n = tok.count_notes(ids)
            fh.write(ids.astype(dtype).tobytes())
            rows.append((shard, shard_fill, len(ids), n))
            shard_fill += len(ids)
            names[split].append(rel)
            notes += n
            tokens += len(ids)
            lengths.append(len(ids))
        if fh is not None:
            fh.close()
        np.save(build / f"{split}.index.npy", np.asarray(rows, dtype=np.int64).reshape(-1, 4))
        split_stats[split] = {
            "pieces": len(rows),
            "tokens": tokens,
            "notes": notes,
            "shards": shard + 1 if rows else 0,
        }
    tok.save(build)
    atomic_write_text(build / "pieces.json", json.dumps(names, indent=0))
    manifest.update(
        {
            "format": FORMAT_VERSION,
            "tokenizer": to_dict(tok.cfg),
            "tokenizer_hash": tok.hash,
            "vocab_size": tok.vocab_size,
            "dtype": np.dtype(dtype).name,
            "splits": split_stats,
            "length_percentiles": {
                f"p{q}": int(np.percentile(lengths, q)) if lengths else 0 for q in (10, 50, 90, 100)
            },
        }
    )
    tokens = sum(s["tokens"] for s in split_stats.values())
    manifest["tokens_per_beat"] = tokens / manifest["beats"] if manifest["beats"] else 0.0
    timings = manifest.setdefault("timings", {})
    timings["write"] = round(time.perf_counter() - write_started, 2)
    timings["total"] = round(time.perf_counter() - started, 2)
    # swap in: remove the previous build's data files, move the new ones, manifest last
    (out / "manifest.json").unlink(missing_ok=True)
    shutil.rmtree(out / "tokens", ignore_errors=True)
    for p in build.iterdir():
        p.replace(out / p.name)
    build.rmdir()
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------------
# public API


def prepare(
    input: str,
    out: Path,
    tok_cfg: TokenizerConfig,
    *,
    workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    force: bool = False,
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    timeout: float = DEFAULT_TIMEOUT_S,
    loader: Loader = midi_io.load_score,
) -> PrepareSummary:
    """Tokenize every music file under ``input`` (a folder, ``bach`` or ``music21:NAME``) into ``out``.

    ``timeout``: seconds one file may take (0 = no limit); a file past it is reported as failed with
    ``timeout after N s``. ``loader`` reads one file (tests pass stubs that hang or crash).
    """
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"--shard-index {shard_index} must be in 0..{num_shards - 1} (--num-shards {num_shards})"
        )
    if workers < 1:
        raise ValueError(f"--workers {workers} must be >= 1")
    started = time.perf_counter()
    out = Path(out)
    root, paths = _list_inputs(input)
    items = [(p.relative_to(root).as_posix(), p) for p in paths]
    items = [(r, p) for r, p in items if in_slice(r, num_shards, shard_index)]
    if not items:
        raise ValueError(
            f"{input}: no music files ({', '.join(midi_io.SUPPORTED_SUFFIXES)}) in this slice"
        )
    key = _cache_key(items, tok_cfg, splits, seed, num_shards, shard_index)
    old = _read_manifest(out)
    if old and old.get("cache_key") == key and not force:
        log.info("%s: reusing prepared data (cache key %s); pass --force to rebuild", out, key)
        return PrepareSummary.from_manifest(out, old, reused=True)

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".parts-*"):
        if stale.name != f".parts-{key}" or force:
            shutil.rmtree(stale, ignore_errors=True)
    parts_dir = out / f".parts-{key}"
    parts_dir.mkdir(exist_ok=True)
    chunks = [items[i : i + CHUNK_FILES] for i in range(0, len(items), CHUNK_FILES)]
    part_paths = [parts_dir / f"part-{i:05d}.npz" for i in range(len(chunks))]
    todo = [i for i, p in enumerate(part_paths) if not p.exists()]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already done", len(chunks) - len(todo), len(chunks))
    _tokenize_all(
        chunks, part_paths, todo, to_dict(tok_cfg), workers=workers, timeout=timeout, loader=loader
    )
    t_tokenize = time.perf_counter() - started

    # collect metadata (tokens stay on disk in the part files)
    metas = []
    for part in part_paths:
        part_metas, _ = _read_part(part)
        metas += [(m, part) for m in part_metas]
    ok = [(m, part) for m, part in metas if m["ok"]]
    failed = [{"path": m["path"], "reason": m["reason"]} for m, _ in metas if not m["ok"]]
    timed = sorted((m for m, _ in metas if "seconds" in m), key=lambda m: -m["seconds"])
    slowest = [
        {"path": m["path"], "seconds": round(m["seconds"], 2), "ok": m["ok"]}
        for m in timed[:SLOWEST_LISTED]
    ]
    if not ok:
        raise ValueError(
            f"{input}: none of {len(items)} files could be prepared (first: "
            f"{failed[0]['path']}: {failed[0]['reason']})"
        )
    group_fn = grouper(input)
    group_of = {m["path"]: group_fn(root, m["path"]) for m, _ in ok}
    split_group = assign_splits(list(group_of.values()), splits, seed, fill_empty=num_shards == 1)
    split_of = {rel: split_group[g] for rel, g in group_of.items()}

    tok = MusicTokenizer(dataclasses.replace(tok_cfg, bpe_vocab_size=0))
    t0 = time.perf_counter()
    if tok_cfg.bpe_vocab_size:
        tok.train_bpe(
            (ids for _, ids in _part_pieces(part_paths, split_of, "train")), tok_cfg.bpe_vocab_size
        )
    t_bpe = time.perf_counter() - t0

    def pieces(split: str) -> Iterator[tuple[str, np.ndarray]]:
        for rel, ids in _part_pieces(part_paths, split_of, split):
            yield rel, tok.apply_bpe(ids)

    total_beats = sum(m["beats"] for m, _ in ok)
    manifest = {
        "cache_key": key,
        "input": str(input),
        "root": str(root),
        "slice": {"num_shards": num_shards, "shard_index": shard_index},
        "split_rule": {"fractions": list(splits), "seed": seed, "by": "sha1(seed:group_key)"},
        "files_total": len(items),
        "files_ok": len(ok),
        "files_failed": failed,
        # a folder's other files; an embedded corpus lists its own files
        "files_ignored": _ignored_files(root) if Path(input) == root else {},
        "files_repaired": sum(bool(m["repairs"]) for m, _ in ok),
        "repairs": sum_counts(m["repairs"] for m, _ in ok),
        "beats": total_beats,
        "slowest": slowest,
        "timeout_s": timeout,
        "timings": {"tokenize": round(t_tokenize, 2), "bpe_train": round(t_bpe, 2)},
    }
    manifest = write_dataset(out, tok, pieces, manifest, started)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return PrepareSummary.from_manifest(out, manifest, reused=False)


def _tokenize_all(
    chunks: list[list[tuple[str, Path]]],
    part_paths: list[Path],
    todo: list[int],
    cfg_dict: dict,
    *,
    workers: int,
    timeout: float,
    loader: Loader,
) -> None:
    """Tokenize the files of chunks ``todo``, one file per task; commit each chunk when complete."""
    done = sum(len(c) for i, c in enumerate(chunks) if i not in set(todo))
    total = sum(len(c) for c in chunks)
    bar = tqdm(
        total=total, initial=done, unit="file", file=sys.stderr, desc="prepare", disable=None
    )
    tasks = [(ci, pos) for ci in todo for pos in range(len(chunks[ci]))]
    # largest files first within each window of a few chunks: a 75 s quartet started last would
    # leave the other workers idle at the end (issue 14); the window bounds what waits in memory
    window = DISPATCH_WINDOW_CHUNKS * CHUNK_FILES
    tasks = [
        t
        for w in range(0, len(tasks), window)
        for t in sorted(tasks[w : w + window], key=lambda t: -chunks[t[0]][t[1]][1].stat().st_size)
    ]
    if any(
        p.suffix.lower() in midi_io.SCORE_SUFFIXES
        for ci, pos in tasks
        for p in [chunks[ci][pos][1]]
    ):
        # import once here, so forked workers (and their replacements) inherit it: partitura and
        # its dependencies take seconds to import (issue 14)
        import partitura  # noqa: F401
    results: dict[int, list] = {ci: [None] * len(chunks[ci]) for ci in todo}
    left = {ci: len(chunks[ci]) for ci in todo}
    items = [(chunks[ci][pos][0], str(chunks[ci][pos][1])) for ci, pos in tasks]
    outcomes = map_files(
        _tokenize_file,
        items,
        workers=workers,
        timeout=timeout,
        initializer=_init_worker,
        initargs=(cfg_dict, loader),
    )
    for out in outcomes:
        ci, pos = tasks[out.index]
        rel = items[out.index][0]
        if out.error is not None:
            meta, ids = {"path": rel, "ok": False, "reason": out.error}, None
            log.warning("%s: %s", rel, out.error)
        else:
            meta, ids = out.value
        meta["seconds"] = round(out.seconds, 3)
        results[ci][pos] = (meta, ids)
        bar.update(1)
        left[ci] -= 1
        if left[ci] == 0:
            rows = results.pop(ci)
            _write_part(part_paths[ci], [m for m, _ in rows], [a for _, a in rows if a is not None])
    bar.close()


def _part_pieces(
    part_paths: list[Path], split_of: dict[str, str], split: str
) -> Iterator[tuple[str, np.ndarray]]:
    """Base ids of one split's pieces, streamed part by part (parts are in relpath order)."""
    for part in part_paths:
        part_metas, arrays = _read_part(part)
        for m, ids in zip((m for m in part_metas if m["ok"]), arrays, strict=True):
            if split_of[m["path"]] == split:
                yield m["path"], ids


def sum_counts(dicts) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + int(v)
    return total
