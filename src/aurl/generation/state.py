"""What a token sequence means so far: vocabulary tables and the per-sequence state.

:class:`Vocab` is derived from the tokenizer's ``base_vocab`` strings (``NoteOn_60``, ``Pitch_60``,
``TimeShift_1.0.8``, ``Position_3``, ``Bar_None``, ``TimeSig_3/4``, ...); BPE ids expand to their
base ids. :func:`advance` moves a :class:`SeqState` by one token: the grammar phase, time, bar,
sounding notes and note count that the constraints (``aurl.generation.constraints``) read.

Time is counted in tokenizer beats (MidiTok's beat is the time-signature denominator; FACTS.md), so
a bar of ``n/d`` lasts ``n`` beats; without TimeSig tokens a beat is a quarter note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

TIME_EPS = 1e-6
"""Beats closer than this are equal (grid steps are >= 1/24 beat)."""


@dataclass
class Vocab:
    """Token-id tables parsed from MidiTok token strings."""

    kind: str
    size: int
    types: list[str]
    pitch: np.ndarray  # (V,) MIDI pitch of NoteOn/NoteOff/Pitch ids, else -1
    beats: np.ndarray  # (V,) beats of TimeShift/Duration ids, else 0
    position: np.ndarray  # (V,) grid step of Position ids, else -1
    program: np.ndarray  # (V,) program of Program ids, else -2 (drums are -1)
    timesig: dict[int, tuple[int, int]]
    res: int  # grid steps per beat
    eos_id: int
    type_mask: dict[str, np.ndarray] = field(default_factory=dict)  # type -> (V,) bool
    expansion: Sequence[np.ndarray] | None = None  # BPE id -> its base ids (None without BPE)
    note_on: np.ndarray | None = None  # (V,) ids that start a note: NoteOn (midilike) or Pitch
    program_changes: bool = False
    """Program tokens appear only when the instrument changes (MidiTok ``program_changes``), so a
    note may follow an event without a Program token of its own."""

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Vocab:
        """Tables for an ``aurl.data.tokenizers.MusicTokenizer`` (BPE merges expand to base ids)."""
        expansion = getattr(tokenizer, "_expansion", None)
        vocab = cls.from_strings(tokenizer.base_vocab, tokenizer.vocab_size, expansion)
        cfg = getattr(tokenizer, "cfg", None)
        vocab.program_changes = bool(cfg and cfg.use_programs and cfg.program_changes)
        return vocab

    @classmethod
    def from_strings(
        cls,
        base_vocab: Sequence[str],
        vocab_size: int | None = None,
        expansion: Sequence[np.ndarray] | None = None,
    ) -> Vocab:
        size = int(vocab_size or len(base_vocab))
        types = [s.split("_", 1)[0] for s in base_vocab] + ["BPE"] * (size - len(base_vocab))
        names = set(types)
        kind = "midilike" if "NoteOff" in names else "remi" if "Bar" in names else "tsd"
        if "NoteOn" not in names and "Pitch" not in names:
            raise ValueError(
                "tokenizer vocabulary has neither NoteOn nor Pitch tokens; cannot constrain it"
            )
        pitch = np.full(size, -1)
        beats = np.zeros(size)
        position = np.full(size, -1)
        program = np.full(size, -2)
        timesig: dict[int, tuple[int, int]] = {}
        res = 0
        for i, s in enumerate(base_vocab):
            t, _, v = s.partition("_")
            if t in ("NoteOn", "NoteOff", "Pitch"):
                pitch[i] = int(v)
            elif t in ("TimeShift", "Duration"):
                whole, frac, r = (int(x) for x in v.split("."))
                beats[i] = whole + frac / r
                res = max(res, r)
            elif t == "Position":
                position[i] = int(v)
            elif t == "Program":
                program[i] = int(v)
            elif t == "TimeSig":
                num, den = v.split("/")
                timesig[i] = (int(num), int(den))
            elif t == "EOS":
                eos_id = i
        if "EOS" not in names:
            raise ValueError("tokenizer vocabulary has no EOS token")
        vocab = cls(kind, size, types, pitch, beats, position, program, timesig, res or 8, eos_id)
        vocab.expansion = expansion
        for t in names:
            vocab.type_mask[t] = np.array([x == t for x in types])
        vocab.type_mask["Program"] = program >= 0  # drums (Program_-1) are not generated
        vocab.note_on = vocab.mask_of("NoteOn" if kind == "midilike" else "Pitch")
        return vocab

    def mask_of(self, *types: str) -> np.ndarray:
        out = np.zeros(self.size, dtype=bool)
        for t in types:
            if t in self.type_mask:
                out |= self.type_mask[t]
        return out

    def has(self, t: str) -> bool:
        return t in self.type_mask and bool(self.type_mask[t].any())

    def id_of(self, t: str, value: float) -> int:
        """Id of the token of type ``t`` whose pitch/beats value equals ``value``."""
        table = self.pitch if t in ("NoteOn", "NoteOff", "Pitch") else self.beats
        hits = np.flatnonzero(self.type_mask[t] & np.isclose(table, value))
        if not len(hits):
            raise ValueError(f"no {t} token with value {value} in this vocabulary")
        return int(hits[0])


@dataclass
class SeqState:
    """What the grammar and the musical constraints know about one sequence so far."""

    phase: str = "start"
    """What comes next: start, event, program (after Program), velocity (after a note start),
    duration (after Velocity), bar (REMI, after Bar/TimeSig), position (REMI, after Position)."""
    program: int = 0
    pitch: int = -1
    time: float = 0.0
    bar_start: float = 0.0
    bar_len: float = 4.0
    last_position: int = -1
    sounding: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    """(program, pitch) -> (onset, end) in beats; end is inf until a MIDILike NoteOff."""
    notes: int = 0
    length: int = 0
    boundary: int = 0
    """Length of the longest prefix ending on a complete event (where a sequence may stop)."""

    def num_sounding(self) -> int:
        return sum(end > self.time + TIME_EPS for _, end in self.sounding.values())


def _set_time(state: SeqState, t: float) -> None:
    state.time = t
    state.sounding = {k: v for k, v in state.sounding.items() if v[1] > t + TIME_EPS}


def advance(state: SeqState, tok: int, vocab: Vocab) -> SeqState:
    """Update ``state`` in place with token ``tok`` and return it."""
    t = vocab.types[tok] if tok < vocab.size else "BPE"
    if t == "BPE" and vocab.expansion is not None and tok < len(vocab.expansion):
        n, boundary = state.length, state.boundary
        for base in vocab.expansion[tok]:
            advance(state, int(base), vocab)
        state.length = n + 1
        state.boundary = state.length if state.phase in ("event", "bar", "done") else boundary
        return state
    state.length += 1
    if t == "TimeShift":
        _set_time(state, state.time + vocab.beats[tok])
        while state.time >= state.bar_start + state.bar_len - TIME_EPS:
            state.bar_start += state.bar_len
        state.phase = "event"
    elif t == "TimeSig":
        state.bar_len = float(vocab.timesig[tok][0])
        state.phase = "bar" if vocab.kind == "remi" else "event"
    elif t == "Bar":
        if state.phase != "start":
            state.bar_start += state.bar_len
        _set_time(state, state.bar_start)
        state.last_position = -1
        state.phase = "bar"
    elif t == "Position":
        _set_time(state, state.bar_start + vocab.position[tok] / vocab.res)
        state.last_position = int(vocab.position[tok])
        state.phase = "position"
    elif t == "Program":
        state.program = int(vocab.program[tok])
        state.phase = "program"
    elif t in ("NoteOn", "Pitch"):
        state.pitch = int(vocab.pitch[tok])
        state.phase = "velocity" if vocab.has("Velocity") else "duration"
        if t == "NoteOn":
            state.sounding[(state.program, state.pitch)] = (state.time, float("inf"))
            state.notes += 1
            if not vocab.has("Velocity"):
                state.phase = "event"
    elif t == "NoteOff":
        state.sounding.pop((state.program, int(vocab.pitch[tok])), None)
        state.phase = "event"
    elif t == "Velocity":
        state.phase = "event" if vocab.kind == "midilike" else "duration"
    elif t == "Duration":
        state.sounding[(state.program, state.pitch)] = (state.time, state.time + vocab.beats[tok])
        state.notes += 1
        state.phase = "event"
    elif t == "EOS":
        state.phase = "done"
    elif t in ("BOS", "PAD"):
        if state.boundary == state.length - 1:  # framing only: keeps the phase, may stop after it
            state.boundary = state.length
        return state
    if state.phase in ("event", "bar", "done"):
        state.boundary = state.length
    return state


def replay(ids: Sequence[int], vocab: Vocab, state: SeqState | None = None) -> SeqState:
    """State after the tokens ``ids`` (BOS/PAD are skipped)."""
    state = state or SeqState()
    for tok in ids:
        advance(state, int(tok), vocab)
    return state
