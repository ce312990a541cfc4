"""The embedded default corpus: music21's Bach chorales converted to MIDI once and cached.

``bach_midi_dir()`` converts every ``.mxl``/``.xml`` file of ``music21.corpus.getComposer('bach')``
(410 with music21 10.5.1; ~29 s on 2 processes, FACTS.md) through :mod:`aurl.data.midi_io` and
caches the MIDI files under ``$AURL_CACHE`` or ``~/.cache/aurl/bach-midi-<music21 version>/``.
The cache directory appears only when complete (written to a temporary directory, then renamed).

``group_key(path)`` names the piece group a file belongs to, so that splits never leak near-duplicate
variants (``bwv112.5`` / ``bwv112.5-sc``, ``bwv18.5-lz`` / ``bwv18.5-w``; FACTS.md) across
train/validation/test.

``music21:NAME`` (:data:`COLLECTIONS`) names other music21 corpus collections that convert cleanly
through partitura; ``prepare`` reads them in place from music21's package folder (nothing is
downloaded or converted ahead), grouped by work so movements and variants of one work share a split.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aurl.data import midi_io

log = logging.getLogger(__name__)

BACH_SUFFIXES = (".mxl", ".xml")
_BWV = re.compile(r"^bwv0*(\d+)", re.IGNORECASE)


def group_key(path: str | os.PathLike) -> str:
    """Piece group of a file: ``bwv<N>`` for Bach (all movements and variants of BWV N), else the stem.

    >>> group_key("x/bwv112.5-sc.mid"), group_key("bwv18.5-lz.mxl"), group_key("pop/001.mid")
    ('bwv112', 'bwv18', '001')
    """
    stem = Path(path).stem
    m = _BWV.match(stem)
    return f"bwv{m.group(1)}" if m else stem.lower()


def bach_sources(limit: int | None = None) -> list[Path]:
    """The chorale MusicXML files shipped with music21, sorted by name (the first ``limit``)."""
    import music21

    paths = sorted(
        (Path(p) for p in music21.corpus.getComposer("bach") if Path(p).suffix in BACH_SUFFIXES),
        key=lambda p: p.name,
    )
    if not paths:
        raise ValueError("music21's corpus has no Bach chorales; reinstall music21 with its corpus")
    return paths[:limit] if limit else paths


def _convert(src: Path, out_dir: Path) -> str | None:
    """Convert one MusicXML file to ``out_dir/<stem>.mid``; returns the failure reason or None."""
    try:
        # music21, not partitura: the cached Bach MIDI (and so data/bach) stays as first prepared
        score, _ = midi_io.load_score(src, reader="music21")
    except midi_io.MidiLoadError as err:
        return str(err)
    midi_io.save_score(score, out_dir / f"{src.stem}.mid")
    return None


def default_cache_root() -> Path:
    """``$AURL_CACHE`` if set, else ``~/.cache/aurl``."""
    env = os.environ.get("AURL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aurl"


def bach_midi_dir(
    cache_dir: str | os.PathLike | None = None, *, limit: int | None = None, workers: int = 2
) -> Path:
    """Directory of Bach chorale MIDI files, converting them on first use.

    ``limit`` converts only the first N chorales (into a separate cache directory; for tests).
    """
    import music21

    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    name = f"bach-midi-{music21.__version__}" + (f"-first{limit}" if limit else "")
    final = root / name
    if final.is_dir():
        return final
    sources = bach_sources(limit)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    log.info("converting %d Bach chorales to MIDI into %s (once)", len(sources), final)
    try:
        if workers > 1 and len(sources) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                reasons = list(pool.map(_convert, sources, [tmp] * len(sources), chunksize=8))
        else:
            reasons = [_convert(src, tmp) for src in sources]
        failed = [r for r in reasons if r]
        for reason in failed:
            log.warning("bach corpus: %s", reason)
        if len(failed) == len(sources):
            raise ValueError(f"could not convert any Bach chorale (first error: {failed[0]})")
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: keep theirs
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# music21:NAME collections


def _group_by_work_folder(root: Path, rel: str) -> str:
    """``beethoven/opus59no1/movement2.mxl`` -> ``beethoven/opus59no1`` (all movements of a work);
    a work in one file (``beethoven/opus132.mxl``) is its own group."""
    parts = Path(rel).parts
    return "/".join(parts[:2]) if len(parts) > 2 else Path(rel).with_suffix("").as_posix()


def _group_by_kern_parent_work(root: Path, rel: str) -> str:
    """The ``!!!OPR`` (parent work: the mass) record of a kern file, so a mass's Kyrie, Gloria,
    ... and its variant movements (``Sanctus_rpt_a/b/c``) share a split; else the file stem."""
    try:
        with (root / rel).open(encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(40), fh, strict=False):
                if line.startswith("!!!OPR:"):
                    return "opr:" + line.split(":", 1)[1].strip().lower()
    except OSError:
        pass
    return Path(rel).stem.lower()


@dataclass(frozen=True)
class Collection:
    """A music21 corpus collection ``aurl prepare music21:NAME`` accepts."""

    folders: tuple[str, ...]
    """Sub-folders of ``music21/corpus``."""
    suffixes: tuple[str, ...]
    """Suffixes kept (other encodings of the same pieces are left out: no duplicates)."""
    group: Callable[[Path, str], str]
    """(corpus root, relative path) -> piece group, so a split never separates a work's parts."""
    about: str


COLLECTIONS: dict[str, Collection] = {
    "quartets": Collection(
        ("beethoven", "mozart", "haydn"),
        (".mxl",),  # beethoven/opus18no1 also has .krn copies of its .mxl movements
        _group_by_work_folder,
        "string quartets: Beethoven, Mozart, Haydn (47 MusicXML files, grouped by opus)",
    ),
    "palestrina": Collection(
        ("palestrina",),
        (".krn",),
        _group_by_kern_parent_work,
        "Palestrina's mass movements (1,318 kern files, grouped by mass)",
    ),
    "monteverdi": Collection(
        ("monteverdi",),
        (".mxl",),
        _group_by_work_folder,
        "Monteverdi madrigals, books 3-5 (49 MusicXML files)",
    ),
}


def music21_corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def collection_files(name: str) -> tuple[Path, list[Path]]:
    """(corpus root, sorted files) of ``music21:NAME``; ``ValueError`` naming the choices."""
    if name not in COLLECTIONS:
        raise ValueError(
            f"music21:{name}: unknown collection; use one of "
            + ", ".join(f"music21:{k}" for k in COLLECTIONS)
            + " (or 'bach')"
        )
    coll = COLLECTIONS[name]
    root = music21_corpus_root()
    files = sorted(
        p
        for folder in coll.folders
        for p in (root / folder).rglob("*")
        if p.suffix.lower() in coll.suffixes and p.is_file()
    )
    if not files:
        raise ValueError(
            f"music21:{name}: no files under {root}; reinstall music21 with its corpus"
        )
    return root, files


def resolve_corpus(input: str) -> Path | None:
    """The root folder of an embedded corpus (``bach``, ``music21:NAME``), or None for a folder."""
    if str(input) == "bach":
        return bach_midi_dir()
    if str(input).startswith("music21:"):
        return collection_files(str(input).removeprefix("music21:"))[0]
    return None


def grouper(input: str) -> Callable[[Path, str], str]:
    """The piece-group function for ``input``: a collection's own, else :func:`group_key`."""
    name = str(input).removeprefix("music21:")
    if str(input).startswith("music21:") and name in COLLECTIONS:
        return COLLECTIONS[name].group
    return lambda root, rel: group_key(rel)
