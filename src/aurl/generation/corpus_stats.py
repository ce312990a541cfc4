"""What generation should respect about a training corpus, measured from its token stream.

``measure`` replays every piece through the same :class:`~aurl.generation.state.SeqState` the
constraints use, so its figures are in the units the constraints compare against (tokenizer beats,
sounding notes, programs as the tokens set them), whatever the tokenizer. Training stores the result
in the run's ``SampleConfig`` (``max_note_beats``, ``max_polyphony``, ``programs``) and generation
turns them into default constraints: no note longer than the corpus's longest, no more voices than
the corpus uses, and only its dominant instrument(s) unless asked otherwise (issue 15).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aurl.generation.state import SeqState, Vocab, advance

DOMINANT_SHARE = 0.05
"""A program is one of the corpus's instruments when it plays at least 5 % of the notes. In music21's
Bach export 24 of 1,767 tracks carry a stray program (54, 24, 19 ...: each ≤ 2 % of the notes) and
program 0 plays 96 %; a sampled stray Program token made 25 of 100 pieces switch instrument."""

POLYPHONY_PERCENTILE = 50
"""Default voice limit: the median of the per-piece maximum of sounding notes, the voice count most
pieces never exceed. Bach (train split): 330 of 375 chorales never exceed 4 voices, 21 reach 5, 23
outliers reach 6-12 where the export doubles a voice with an instrument part; the median gives 4.
Measured on 100 pieces (BENCHMARKS.md, issue 15): with the model shipped until 2026-12-01 a limit of 4
blocked voices the model meant to enter (scale consistency 0.90 -> 0.84), so the 90th percentile (5)
was the default; the model trained for 2 hours writes four voices itself, and with 4 its polyphony
overlap rose from 0.59 to 0.82 and the suite's mean overlap from 0.860 to 0.874 while scale
consistency moved from 0.925 to 0.915. `--max-polyphony` sets it per request (0 = no limit)."""


@dataclass
class CorpusStats:
    """Figures of a tokenized corpus, in tokenizer beats."""

    pieces: int
    notes: int
    max_note_beats: float
    max_polyphony: int
    programs: tuple[int, ...]
    program_shares: dict[int, float] = field(default_factory=dict)
    note_beats_p999: float = 0.0

    def render(self) -> str:
        shares = ", ".join(f"{p}: {s:.1%}" for p, s in sorted(self.program_shares.items())[:8])
        return (
            f"{self.pieces} pieces, {self.notes} notes; longest note {self.max_note_beats:g} beats "
            f"(99.9 % <= {self.note_beats_p999:g}); voices <= {self.max_polyphony} "
            f"(p{POLYPHONY_PERCENTILE} of per-piece maxima); programs {list(self.programs)} ({shares})"
        )


def _base_ids(ids: Sequence[int], vocab: Vocab) -> Iterable[int]:
    """``ids`` with every BPE merge replaced by the base ids it stands for (recursively)."""
    for tok in ids:
        tok = int(tok)
        if vocab.expansion is not None and tok < len(vocab.expansion) and vocab.types[tok] == "BPE":
            yield from _base_ids(vocab.expansion[tok], vocab)
        else:
            yield tok


def measure(pieces: Iterable[Sequence[int]], vocab: Vocab) -> CorpusStats:
    """Replay each piece's token ids and collect note lengths, voices and programs."""
    durations: list[float] = []
    poly_max: list[int] = []
    programs: Counter[int] = Counter()
    n_pieces = 0
    is_off = vocab.mask_of("NoteOff")
    is_dur = vocab.mask_of("Duration")
    for ids in pieces:
        n_pieces += 1
        s = SeqState()
        most = 0
        for tok in _base_ids(ids, vocab):
            if tok < vocab.size and is_off[tok]:
                opened = s.sounding.get((s.program, int(vocab.pitch[tok])))
                if opened is not None:
                    durations.append(s.time - opened[0])
            advance(s, tok, vocab)
            if tok < vocab.size and vocab.note_on[tok]:
                programs[s.program] += 1
            if tok < vocab.size and is_dur[tok]:
                durations.append(float(vocab.beats[tok]))
            most = max(most, int(s.num_sounding()))
        poly_max.append(most)
    notes = sum(programs.values())
    if not notes:
        raise ValueError("the corpus holds no notes; cannot measure generation defaults")
    shares = {p: c / notes for p, c in programs.items()}
    pitched = {p: c for p, c in programs.items() if p >= 0}  # drums (-1) are never generated
    dominant = tuple(sorted(p for p, c in pitched.items() if c / notes >= DOMINANT_SHARE))
    arr = np.asarray(durations or [0.0])
    return CorpusStats(
        pieces=n_pieces,
        notes=notes,
        max_note_beats=float(arr.max()),
        max_polyphony=math.ceil(np.percentile(poly_max, POLYPHONY_PERCENTILE)),
        programs=dominant or tuple(p for p, _ in Counter(pitched).most_common(1)),
        program_shares=shares,
        note_beats_p999=float(np.percentile(arr, 99.9)),
    )


def median_tempo(paths: Iterable[str | os.PathLike]) -> float | None:
    """Median first tempo (quarter notes per minute) of the MIDI files that exist and load; None
    when none does (e.g. a prepared directory whose source files were moved)."""
    from aurl.data.midi_io import MidiLoadError, load_score

    tempos = []
    for path in paths:
        if Path(path).suffix.lower() not in (".mid", ".midi") or not Path(path).is_file():
            continue
        try:
            score, _ = load_score(path)
        except MidiLoadError:
            continue
        if len(score.tempos):
            tempos.append(float(score.tempos[0].qpm))
    return float(np.median(tempos)) if tempos else None
