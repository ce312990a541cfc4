"""Notation files (MusicXML, compressed MXL, MEI, Humdrum kern) -> ``symusic.Score`` via partitura.

partitura reads a string quartet in a few seconds where music21's parse + MIDI export takes 10-40 s
(issue 14; benchmarks/bench_notation.py). What the score keeps:

- **notes** with ties merged (partitura's ``notes_tied``); grace notes (no notated duration) are
  dropped, as music21's MIDI export drops them; every note gets velocity :data:`VELOCITY` (notation
  has no velocities; 91 is what music21 10.5's export gives an unmarked note, FACTS.md, so notation
  read either way tokenizes alike);
- **parts as tracks**, named after the part, with the General MIDI program of its name
  (:data:`PROGRAM_BY_NAME`, e.g. "Violin I" -> 40), else of the part's MusicXML ``<midi-program>``,
  else 0;
- **tempo** from every metronome/sound tempo the file states (in quarter notes per minute), 120 until
  the first one; **time and key signatures** of the first part;
- **repeats unfolded the way a performance plays them**: partitura's ``unfold_part_maximal`` with
  ``ignore_leaps=False``, i.e. every repeated section is played twice, first/second endings
  followed, a backward repeat with no forward repeat goes back to the start (pickup included), and
  after a da capo / dal segno / coda jump the repeats are *not* taken again (the usual performance
  convention). music21's ``expandRepeats`` (the old path) gives the same notes on the test score and
  on the corpus files compared in benchmarks/bench_notation.py. A score whose repeat marks partitura
  cannot unfold is read straight through (logged).

``read_notation`` raises :class:`NotationError` (with a one-line reason) when partitura cannot read a
file; ``midi_io.load_score`` then falls back to music21.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import symusic

log = logging.getLogger(__name__)

__all__ = ["PARTITURA_SUFFIXES", "TPQ", "VELOCITY", "NotationError", "read_notation"]

PARTITURA_SUFFIXES = (".mxl", ".xml", ".musicxml", ".mei", ".krn")
TPQ = 10080
"""Ticks per quarter: 2^5 * 3^2 * 5 * 7, so 32nd notes, triplets, quintuplets and septuplets land
on whole ticks; the same resolution music21's MIDI export writes (FACTS.md)."""
VELOCITY = 91
DEFAULT_QPM = 120.0

# General MIDI programs (0-based) by a word in the part's name; first match wins, so the more
# specific words come first ("contrabass" before "bass", "violoncello" before "violin").
PROGRAM_BY_NAME: tuple[tuple[str, int], ...] = (
    ("contrabass", 43),
    ("double bass", 43),
    ("violoncello", 42),
    ("cello", 42),
    ("viola", 41),
    ("violin", 40),
    ("piano", 0),
    ("pianoforte", 0),
    ("harpsichord", 6),
    ("cembalo", 6),
    ("organ", 19),
    ("guitar", 24),
    ("harp", 46),
    ("flute", 73),
    ("oboe", 68),
    ("clarinet", 71),
    ("bassoon", 70),
    ("horn", 60),
    ("trumpet", 56),
    ("trombone", 57),
    ("tuba", 58),
    ("timpani", 47),
    # voices: "Voice Oohs", what music21 assigns a vocal part
    ("soprano", 53),
    ("alto", 53),
    ("tenor", 53),
    ("bass", 53),
    ("canto", 53),
    ("quinto", 53),
    ("voice", 53),
)


class NotationError(ValueError):
    """partitura could not read a file; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def read_notation(path: str | os.PathLike) -> symusic.Score:
    """Read one notation file with partitura into a score at :data:`TPQ` ticks per quarter."""
    import partitura
    import partitura.score as pscore

    path = Path(path)
    with warnings.catch_warnings():
        # partitura warns for every direction word it cannot parse ("pizz", lyrics fragments):
        # hundreds of lines per quartet and nothing a user can act on
        warnings.simplefilter("ignore")
        try:
            if path.suffix.lower() == ".krn":
                parsed = _load_kern(path)
            else:
                parsed = partitura.load_score(str(path), quiet=True)
        except Exception as err:  # partitura raises many types for unreadable input
            raise NotationError(f"partitura cannot parse: {_one_line(err)}") from None
        parts = list(parsed.parts)
        if not parts:
            raise NotationError("partitura found no parts")
        unfolded, not_unfolded = [], []
        for part in parts:
            if not _has_repeat_marks(part, pscore):
                unfolded.append(part)  # unfolding copies the whole part (~40 % of a read)
                continue
            _fix_ending_numbers(part)
            try:
                # ignore_leaps=False: no repeats after a da capo / dal segno / coda jump
                unfolded.append(
                    pscore.unfold_part_maximal(part, update_ids=False, ignore_leaps=False)
                )
            except (Exception, RecursionError) as err:
                not_unfolded.append(f"{part.id} ({_one_line(err)})")
                unfolded.append(part)
        if not_unfolded:
            log.info("%s: read without unfolding repeats: %s", path, "; ".join(not_unfolded))
    programs = _musicxml_programs(path)
    # partitura puts a pickup measure before quarter 0; music21 and MIDI start the piece there
    q0 = min(float(part.quarter_map(part.first_point.t)) for part in unfolded if part.first_point)
    score = symusic.Score(TPQ)
    for i, part in enumerate(unfolded):
        track = _track(part, programs.get(part.id), q0)
        if track.notes:
            score.tracks.append(track)
        if i == 0:
            _meta(part, score, q0)
    if score.note_num() == 0:
        raise NotationError("partitura found no notes")
    return score


def _load_kern(path: Path):
    """partitura's kern reader, after unfolding the file's expansion list (see :func:`expand_kern`)."""
    import tempfile

    import partitura

    text = path.read_text(encoding="utf-8", errors="replace")
    expanded = expand_kern(text)
    if expanded is None:
        return partitura.load_kern(str(path), quiet=True)
    with tempfile.TemporaryDirectory(prefix="aurl-kern-") as tmp:
        flat = Path(tmp) / path.name
        flat.write_text(expanded, encoding="utf-8")
        return partitura.load_kern(str(flat), quiet=True)


def expand_kern(text: str) -> str | None:
    """Humdrum repeats -> one straight kern text, or None when there is nothing to expand.

    Kern writes repeats as labelled sections (``*>A``, ``*>B``) and an expansion list naming the
    performed order (``*>[A,A,B,B]``; ``*>norep[...]`` is the version without repeats). partitura
    reads the sections once in file order, so the sections are copied out in the list's order.
    None (read the file as is) when there is no list, a label is missing, or the spine count
    changes at a joint between two sections."""
    lines = text.split("\n")

    def record(line: str) -> list[str]:
        return line.rstrip("\r").split("\t")

    def all_fields(line: str, test) -> bool:
        fields = record(line)
        return bool(fields) and all(test(f) for f in fields)

    order = None
    for line in lines:
        if all_fields(line, lambda f: f.startswith("*>[") and f.endswith("]")):
            order = [x.strip() for x in record(line)[0][3:-1].split(",") if x.strip()]
            break
    if not order:
        return None
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    tail: list[str] = []
    current: list[str] | None = None
    for line in lines:
        if all_fields(line, lambda f: f.startswith("*>") and "[" not in f):
            label = record(line)[0][2:]
            current = sections.setdefault(label, [])
            continue
        if all_fields(line, lambda f: f.startswith("*>") and "[" in f):
            continue  # the expansion lists themselves
        if all_fields(line, lambda f: f == "*-"):
            current = tail
        (head if current is None else current).append(line)
    if any(label not in sections or not sections[label] for label in order):
        return None

    def spines(block: list[str], last: bool) -> int:
        data = [x for x in block if x and not x.startswith("!!")]
        return len(record(data[-1 if last else 0])) if data else 0

    for a, b in itertools.pairwise(order):
        if spines(sections[a], last=True) != spines(sections[b], last=False):
            return None
    return "\n".join(head + [x for label in order for x in sections[label]] + tail)


def _has_repeat_marks(part, pscore) -> bool:
    """Whether ``part`` has anything unfolding would act on: repeats, endings, jumps. A ``Fine``
    alone does not count: partitura's kern reader makes one of every final ``==`` barline (all
    1,318 Palestrina files), and unfolding such a part fails; it only matters after a jump."""
    kinds = (
        pscore.Repeat,
        pscore.Ending,
        pscore.DaCapo,
        pscore.DalSegno,
        pscore.Segno,
        pscore.Coda,
        pscore.ToCoda,
    )
    return any(next(part.iter_all(kind), None) is not None for kind in kinds)


def _fix_ending_numbers(part) -> None:
    """Give an ending bracket with no usable number (``<ending type="stop" number=""/>``, a stop
    with no start, in three corpus quartets) the number 1, and drop non-numbers from ``"1, 2"``:
    partitura's unfolding parses the numbers with ``int()`` and would give up on the whole part."""
    import partitura.score as pscore

    for ending in part.iter_all(pscore.Ending):
        numbers = [n.strip() for n in str(ending.number or "").split(",")]
        numbers = [n for n in numbers if n.isdigit()]
        fixed = ",".join(numbers) or "1"
        if fixed != ending.number:
            ending.number = fixed


def _track(part, program: int | None, q0: float) -> symusic.Track:
    name = (part.part_name or part.id or "").strip()
    # the name first, as music21 does: exports often give every part one generic program
    # (all four parts of Mozart's K. 80 say 49, "String Ensemble 1")
    prog = _program_for(name)
    if prog is None:
        prog = program if program is not None else 0
    track = symusic.Track(name, prog, False)
    na = part.note_array()
    if len(na) == 0:
        return track
    onset = np.rint((na["onset_quarter"] - q0) * TPQ).astype(np.int32)
    dur = np.rint(na["duration_quarter"] * TPQ).astype(np.int32)
    keep = dur > 0  # grace notes
    pitch = na["pitch"].astype(np.int8)
    order = np.lexsort((pitch[keep], onset[keep]))
    track.notes = symusic.Note.from_numpy(
        time=onset[keep][order],
        duration=dur[keep][order],
        pitch=pitch[keep][order],
        velocity=np.full(int(keep.sum()), VELOCITY, dtype=np.int8),
    )
    return track


def _meta(part, score: symusic.Score, q0: float) -> None:
    """Tempos, time and key signatures of ``part`` (the first part; the others repeat them)."""
    import partitura.score as pscore

    qmap = part.quarter_map

    def tick(t: int) -> int:
        return round((float(qmap(t)) - q0) * TPQ)

    tempos = []
    for tempo in part.iter_all(pscore.Tempo):
        try:
            qpm = float(tempo.bpm) * _quarters_per_unit(tempo.unit)
        except (TypeError, ValueError):
            continue
        if 10.0 <= qpm <= 1000.0:
            tempos.append((tick(tempo.start.t), qpm))
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, DEFAULT_QPM))
    # an unfolded repeat restates the marks at its start: keep only the changes
    for t, qpm in _changes(sorted(tempos)):
        score.tempos.append(symusic.Tempo(t, qpm))
    sigs = sorted(
        (tick(ts.start.t), (ts.beats, ts.beat_type))
        for ts in part.iter_all(pscore.TimeSignature)
        if ts.beats and ts.beat_type
    )
    for t, (num, den) in _changes(sigs):
        score.time_signatures.append(symusic.TimeSignature(t, num, den))
    keys = sorted(
        (tick(ks.start.t), (int(ks.fifths), int((ks.mode or "").lower() == "minor")))
        for ks in part.iter_all(pscore.KeySignature)
    )
    for t, (fifths, minor) in _changes(keys):
        score.key_signatures.append(symusic.KeySignature(t, fifths, minor))


def _changes(marks: list[tuple[int, object]]) -> list[tuple[int, object]]:
    """Time-sorted (tick, value) marks -> those that change the value (the last one per tick)."""
    at_tick: dict[int, object] = {}
    for t, value in marks:
        at_tick[t] = value
    out: list[tuple[int, object]] = []
    for t, value in sorted(at_tick.items()):
        if not out or out[-1][1] != value:
            out.append((t, value))
    return out


_UNIT_QUARTERS = {"w": 4.0, "h": 2.0, "q": 1.0, "e": 0.5, "s": 0.25}


def _quarters_per_unit(unit: str | None) -> float:
    """A tempo unit (partitura spells them ``q``, ``h.``, ``e``...) in quarter notes."""
    if not unit:
        return 1.0
    unit = unit.strip().lower()
    base = _UNIT_QUARTERS.get(unit.rstrip(".")[:1], 1.0)
    dots = len(unit) - len(unit.rstrip("."))
    return base * (2 - 0.5**dots)


def _program_for(name: str) -> int | None:
    low = name.lower()
    for word, program in PROGRAM_BY_NAME:
        if word in low:
            return program
    return None


_MIDI_PROGRAM = re.compile(rb"<score-part[^>]*\bid=[\"']([^\"']+)[\"'].*?</score-part>", re.DOTALL)
_PROGRAM_TAG = re.compile(rb"<midi-program>\s*(\d+)\s*</midi-program>")


def _musicxml_programs(path: Path) -> dict[str, int]:
    """Part id -> 0-based General MIDI program from MusicXML ``<midi-program>`` (1-based there).

    partitura does not keep it; reading the part list again costs milliseconds. Empty for other
    formats or when the file does not say."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".mxl":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith((".xml", ".musicxml"))]
                names = [n for n in names if not n.startswith("META-INF")]
                data = z.read(names[0]) if names else b""
        elif suffix in (".xml", ".musicxml"):
            data = path.read_bytes()
        else:
            return {}
    except (OSError, zipfile.BadZipFile, KeyError):
        return {}
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 (several Monteverdi madrigals)
        data = data.decode("utf-16", errors="replace").encode()
    head = data.split(b"</part-list>", 1)[0]
    out = {}
    for m in _MIDI_PROGRAM.finditer(head):
        prog = _PROGRAM_TAG.search(m.group(0))
        if prog and 1 <= int(prog.group(1)) <= 128:
            out[m.group(1).decode(errors="replace")] = int(prog.group(1)) - 1
    return out


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"
