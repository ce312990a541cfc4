"""The embedded default corpus: music21's Bach chorales converted to MIDI once and cached.

``bach_midi_dir()`` converts every ``.mxl``/``.xml`` file of ``music21.corpus.getComposer('bach')``
(410 with music21 10.5.1; ~29 s on 2 processes, FACTS.md) through :mod:`aurl.data.midi_io` and
caches the MIDI files under ``$AURL_CACHE`` or ``~/.cache/aurl/bach-midi-<music21 version>/``.
The cache directory appears only when complete (written to a temporary directory, then renamed).

``group_key(path)`` names the piece group a file belongs to, so that splits never leak near-duplicate
variants (``bwv112.5`` / ``bwv112.5-sc``, ``bwv18.5-lz`` / ``bwv18.5-w``; FACTS.md) across
train/validation/test.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
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
        score, _ = midi_io.load_score(src)
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
