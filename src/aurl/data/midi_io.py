"""The only module that reads or writes music files.

``load_score(path)`` is lenient: every file either loads (repaired, with a :class:`RepairReport`
saying what changed) or raises :class:`MidiLoadError` whose ``str()`` is ``"<path>: <reason>"``
with a one-line reason (``empty file (0 bytes)``, ``not a MIDI file (header b'RIFF')``,
``truncated: ...``, ``corrupt: ...``, ``too large ...``, ``no notes``). A file with no notes is a
failure: it has nothing to train on.

``.mid/.midi`` are parsed by symusic (~23k files/s, FACTS.md). Notation is read by partitura
(``.mxl/.xml/.musicxml/.mei/.krn``, :mod:`aurl.data.notation`; ~10x faster than music21 on the
corpus quartets, issue 14), falling back to music21 -> MIDI bytes -> symusic when partitura cannot
read a file, and for ``.abc`` (retrying around two known music21 bugs, FACTS.md). ``reader=`` picks
one path explicitly (the Bach cache keeps music21 so ``data/bach`` stays as prepared).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

import symusic

from aurl.atomic import atomic_write_bytes
from aurl.data.repair import RepairReport, repair_score

__all__ = [
    "MAX_BYTES",
    "MIDI_SUFFIXES",
    "SCORE_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "MidiLoadError",
    "RepairReport",
    "find_music_files",
    "load_score",
    "load_score_bytes",
    "save_score",
]

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".mei", ".abc", ".krn")
"""Notation formats: partitura reads all but ``.abc``; music21 is the fallback and reads ``.abc``."""
READERS = ("auto", "partitura", "music21")
"""Notation readers: ``auto`` = partitura, then music21 if partitura fails."""
SUPPORTED_SUFFIXES = MIDI_SUFFIXES + SCORE_SUFFIXES

MAX_BYTES = 64 * 1024 * 1024
"""Largest file accepted. The biggest file in the shared datasets is 265 KB; 64 MB is far beyond
any real piece and keeps a mislabelled video or archive from being read into memory."""


class MidiLoadError(ValueError):
    """A file that cannot be loaded; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def find_music_files(folder: str | os.PathLike) -> list[Path]:
    """All files under ``folder`` (recursive) whose suffix is supported (any case), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory; pass a folder of MIDI/MusicXML/ABC/kern files")
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file()
    )


def load_score(
    path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, reader: str = "auto"
) -> tuple[symusic.Score, RepairReport]:
    """Load and repair one music file; raises :class:`MidiLoadError` with a reason if impossible.

    ``reader`` (notation only): ``auto`` (partitura, music21 if it fails), ``partitura``, ``music21``.
    """
    if reader not in READERS:
        raise ValueError(f"reader={reader!r}; use one of {', '.join(READERS)}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise MidiLoadError(
            path, f"unsupported suffix {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        size = path.stat().st_size
    except OSError as err:
        raise MidiLoadError(path, f"cannot read ({err.strerror or err})") from None
    if size > max_bytes:
        raise MidiLoadError(path, f"too large ({size} bytes > {max_bytes}; raise max_bytes)")
    if suffix in SCORE_SUFFIXES:
        if size == 0:
            raise MidiLoadError(path, "empty file (0 bytes)")
        return _finish(path, _notation_to_score(path, reader))
    try:
        data = path.read_bytes()
    except OSError as err:
        raise MidiLoadError(path, f"cannot read ({err.strerror or err})") from None
    return load_score_bytes(data, str(path), max_bytes=max_bytes)


def load_score_bytes(
    data: bytes, name: str = "<bytes>", *, max_bytes: int = MAX_BYTES
) -> tuple[symusic.Score, RepairReport]:
    """Load and repair MIDI bytes; ``name`` is used in error messages (``"<name>: <reason>"``)."""
    if len(data) == 0:
        raise MidiLoadError(name, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise MidiLoadError(name, f"too large ({len(data)} bytes > {max_bytes}; raise max_bytes)")
    data = _unwrap_rmid(data)
    if data[:4] != b"MThd":
        raise MidiLoadError(name, f"not a MIDI file (header {bytes(data[:4])!r})")
    if len(data) < 14:
        raise MidiLoadError(name, f"truncated: header is {len(data)} bytes, a MIDI header needs 14")
    try:
        score = symusic.Score.from_midi(data)
    except (RuntimeError, ValueError, IndexError, OverflowError) as err:
        raise MidiLoadError(name, _parse_reason(str(err))) from None
    return _finish(name, score)


def save_score(score: symusic.Score, path: str | os.PathLike) -> None:
    """Write ``score`` as a standard MIDI file, atomically (temporary file + rename)."""
    atomic_write_bytes(path, score.dumps_midi())


# ---------------------------------------------------------------------------------------------


def _finish(name: str | os.PathLike, score: symusic.Score) -> tuple[symusic.Score, RepairReport]:
    """Repair a parsed score; a score with no notes left is a failure (nothing to learn from)."""
    if score.note_num() == 0:
        raise MidiLoadError(name, "no notes")
    score, report = repair_score(score)
    if score.note_num() == 0:
        raise MidiLoadError(name, f"no notes after repair ({report})")
    if report:
        log.debug("%s: %s", name, report)
    return score, report


def _unwrap_rmid(data: bytes) -> bytes:
    """RIFF-wrapped MIDI (``RIFF....RMID data <len> MThd...``, Microsoft RMI) -> the MIDI bytes.
    Any other RIFF (WAV, AVI) is returned unchanged and rejected by the header check."""
    if data[:4] == b"RIFF" and data[8:12] == b"RMID" and data[12:16] == b"data":
        inner = int.from_bytes(data[16:20], "little")
        return data[20 : 20 + inner]
    return data


def _parse_reason(message: str) -> str:
    """symusic's parse error -> a one-line reason (truncation is named as such)."""
    text = " ".join(message.split()).removeprefix("MiniMidi: ").removesuffix(": iostream error")
    low = text.lower()
    if "chunk length" in low or "unexpected end" in low or "less than" in low or "eof" in low:
        return f"truncated: {text}"
    bad_value = re.fullmatch(r"Get (\w+)=(-?\d+)", text)  # e.g. "Get control_value=168"
    if bad_value:
        what, value = bad_value.group(1).replace("_", " "), bad_value.group(2)
        return f"corrupt: {what} {value} is outside MIDI's 0..127 ({text})"
    return f"corrupt: {text}"


def _notation_to_score(path: Path, reader: str) -> symusic.Score:
    """partitura first (``auto``), music21 when partitura cannot read the file or for ABC."""
    from aurl.data import notation

    if reader == "music21" or path.suffix.lower() not in notation.PARTITURA_SUFFIXES:
        return _music21_to_score(path)
    try:
        return notation.read_notation(path)
    except notation.NotationError as err:
        if reader == "partitura":
            raise MidiLoadError(path, err.reason) from None
        log.info("%s: %s; trying music21", path, err.reason)
        notation_reason = err.reason
    try:
        return _music21_to_score(path)
    except MidiLoadError as err:
        raise MidiLoadError(path, f"{err.reason} (after partitura: {notation_reason})") from None


def _music21_to_score(path: Path) -> symusic.Score:
    """Parse a notation file with music21 and convert it to a symusic score via MIDI bytes.

    Retries around two music21 10.5 bugs seen on its own corpus (FACTS.md): badly formed repeats
    (``ExpanderException``; strip repeats and retry) and one TimeSignature object reused in several
    measures (``StreamException ... already found``; deep-copy and retry).
    """
    import music21  # slow import (~1 s); only notation files need it

    try:
        # forceSource: music21 otherwise caches parsed files as pickles in its scratch folder
        # and loads them back later; this project never unpickles (docs/architecture.md)
        stream = music21.converter.parse(str(path), forceSource=True)
    except Exception as err:  # music21 raises many unrelated types for a bad file
        raise MidiLoadError(path, f"music21 cannot parse: {_one_line(err)}") from None
    attempts = (
        ("as is", lambda s: s),
        ("repeats stripped", _strip_repeats),
        ("deep-copied", copy.deepcopy),
        ("deep-copied, repeats stripped", lambda s: _strip_repeats(copy.deepcopy(s))),
    )
    last: Exception | None = None
    for label, fix in attempts:
        try:
            midi_file = music21.midi.translate.music21ObjectToMidiFile(fix(stream))
            data = midi_file.writestr()
        except Exception as err:  # see docstring: music21 bugs surface as assorted exceptions
            last = err
            log.debug("%s: music21 MIDI export failed (%s): %s", path, label, _one_line(err))
            continue
        if label != "as is":
            log.info("%s: music21 export needed a retry (%s)", path, label)
        try:
            return symusic.Score.from_midi(data)
        except RuntimeError as err:
            raise MidiLoadError(path, f"music21 wrote unreadable MIDI: {_one_line(err)}") from None
    raise MidiLoadError(path, f"music21 cannot convert to MIDI: {_one_line(last)}")


def _strip_repeats(stream):
    """Remove repeat barlines and repeat expressions so music21 plays the score straight through."""
    import music21

    stream = copy.deepcopy(stream)
    for measure in stream.recurse().getElementsByClass(music21.stream.Measure):
        # repeat barlines live in the measure's barline attributes, not as stream elements
        if isinstance(measure.leftBarline, music21.bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, music21.bar.Repeat):
            measure.rightBarline = None
    for el in list(stream.recurse().getElementsByClass(music21.repeat.RepeatExpression)):
        el.activeSite.remove(el)
    return stream


def _one_line(err: BaseException | None) -> str:
    text = " ".join(str(err).split()) if err is not None else "unknown error"
    name = type(err).__name__ if err is not None else "Error"
    return f"{name}: {text[:200]}"
