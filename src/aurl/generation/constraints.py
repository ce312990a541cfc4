"""Named, stateful logit masks that keep generated token streams decodable and musical.

One :class:`SeqState` per sequence is advanced token by token (:func:`advance`); each constraint is
a small object whose ``banned(state)`` returns a boolean mask over the vocabulary (or ``None``).
:class:`ConstraintSet` applies them to a batch of logits: **strict** constraints set banned logits
to ``-inf``, **soft** ones subtract a penalty (nats). The grammar is always strict: it is what
guarantees that every sequence the sampler returns can be decoded by the tokenizer. Musical
constraints as single-purpose masks follow jthickstun/anticipation's ``sample.py``.

Everything is derived from the tokenizer's ``base_vocab`` strings (``NoteOn_60``, ``Pitch_60``,
``TimeShift_1.0.8``, ``Position_3``, ``Bar_None``, ``TimeSig_3/4``, ...). Ids past ``base_vocab``
(BPE merges) and tokens the grammar does not model (drums, tempo, MASK) are banned by the grammar.

Time is counted in tokenizer beats (MidiTok's beat is the time-signature denominator; FACTS.md), so
a bar of ``n/d`` lasts ``n`` beats.

Shape letters: B batch, V vocabulary.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)

TIME_EPS = 1e-6
_NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# min = natural minor plus the raised leading tone: Bach's minor-key cadences use the raised 7th
# (harmonic minor) while melodies use the natural one.
SCALES = {
    "maj": (0, 2, 4, 5, 7, 9, 11),
    "min": (0, 2, 3, 5, 7, 8, 10, 11),
    "natmin": (0, 2, 3, 5, 7, 8, 10),
    "harmin": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
# Token types the grammar can produce; anything else (drums, tempo, MASK, BPE) is banned.
_KNOWN = {"NoteOn", "NoteOff", "Pitch", "Velocity", "Duration", "TimeShift", "Position", "Bar",
          "TimeSig", "Program", "EOS"}  # fmt: skip


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

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Vocab:
        """Tables for an ``aurl.data.tokenizers.MusicTokenizer`` (BPE merges expand to base ids)."""
        expansion = getattr(tokenizer, "_expansion", None)
        return cls.from_strings(tokenizer.base_vocab, tokenizer.vocab_size, expansion)

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


# ---------------------------------------------------------------------------------------------
# constraints: banned(state) -> (V,) bool or None


class Grammar:
    """Only tokens that keep the sequence decodable: event order per scheme, NoteOff only for a
    pitch sounding since an earlier time step, no repeated NoteOn of a sounding pitch, REMI positions increasing inside the
    bar, no EOS before the first note (nor, for MIDILike, while notes still sound)."""

    strict = True

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        v = vocab
        starts = "Program" if v.has("Program") else ("NoteOn" if v.kind == "midilike" else "Pitch")
        note_start = ("NoteOn", "NoteOff") if v.kind == "midilike" else ("Pitch",)
        after_note = (
            "Velocity" if v.has("Velocity") else ("event" if v.kind == "midilike" else "Duration")
        )
        event = {
            "midilike": ("TimeShift", "TimeSig", starts),
            "tsd": ("TimeShift", "TimeSig", starts),
        }
        event["remi"] = (
            "Position",
            "Bar",
            starts,
        )  # after a note: another note, a later position, a new bar
        after_program = note_start
        if starts != "Program":
            event[v.kind] = (*event[v.kind], *note_start)
        self.allowed = {
            "start": v.mask_of("Bar") if v.kind == "remi" else v.mask_of(*event[v.kind]),
            "event": v.mask_of(*event[v.kind]),
            "program": v.mask_of(*after_program),
            "velocity": v.mask_of(after_note)
            if after_note != "event"
            else v.mask_of(*event[v.kind]),
            "duration": v.mask_of("Duration"),
            "bar": v.mask_of("Position", "Bar", "TimeSig"),
            "position": v.mask_of(starts) if starts == "Program" else v.mask_of(*note_start),
            "done": np.zeros(v.size, dtype=bool),
        }
        self.allowed["done"][v.eos_id] = True
        self.is_note_on = v.mask_of("NoteOn")
        self.is_note_off = v.mask_of("NoteOff")

    def banned(self, s: SeqState) -> np.ndarray:
        v = self.vocab
        ok = self.allowed[s.phase].copy()
        if v.kind == "midilike" and ok[self.is_note_off].any():
            # NoteOff only for pitches sounding in the current program; NoteOn only for silent ones.
            ok &= ~self.is_note_off
            mine = {
                p: on
                for (prog, p), (on, _) in s.sounding.items()
                if prog == s.program or not v.has("Program")
            }
            # a note must last at least one grid step: no NoteOff at its own onset (zero length)
            ended = [p for p, on in mine.items() if on < s.time - TIME_EPS]
            ok[self.is_note_off & np.isin(v.pitch, ended)] = True
            ok[self.is_note_on & np.isin(v.pitch, list(mine))] = False
        if v.kind == "remi" and s.phase in ("bar", "event"):
            steps = v.position
            ok &= ~((steps >= 0) & ((steps <= s.last_position) | (steps >= s.bar_len * v.res)))
        if s.notes > 0 and s.phase in ("event", "bar") and (v.kind != "midilike" or not s.sounding):
            ok[v.eos_id] = True
        return ~ok


class Key:
    """Ban note starts whose pitch class is outside a key, e.g. ``D:min`` or ``F#:maj``."""

    def __init__(self, vocab: Vocab, key: str, strict: bool = True) -> None:
        self.vocab, self.strict = vocab, strict
        self.pitch_classes = parse_key(key)
        self.mask = vocab.note_on & ~np.isin(vocab.pitch % 12, self.pitch_classes)

    def banned(self, s: SeqState) -> np.ndarray:
        return self.mask


class PitchRange:
    """Ban note starts outside ``low..high`` (inclusive MIDI pitches)."""

    def __init__(self, vocab: Vocab, low: int, high: int, strict: bool = True) -> None:
        if not 0 <= low <= high <= 127:
            raise ValueError(f"pitch range {low}-{high} must satisfy 0 <= LOW <= HIGH <= 127")
        self.strict = strict
        self.mask = vocab.note_on & ((vocab.pitch < low) | (vocab.pitch > high))

    def banned(self, s: SeqState) -> np.ndarray:
        return self.mask


class Polyphony:
    """Ban note starts while ``max_notes`` notes already sound."""

    def __init__(self, vocab: Vocab, max_notes: int, strict: bool = True) -> None:
        if max_notes < 1:
            raise ValueError(f"max polyphony {max_notes} must be >= 1")
        self.max_notes, self.strict, self.mask = max_notes, strict, vocab.note_on

    def banned(self, s: SeqState) -> np.ndarray | None:
        return self.mask if s.num_sounding() >= self.max_notes else None


class Programs:
    """Only these instruments (General MIDI programs), e.g. the tracks of the piece being infilled."""

    def __init__(self, vocab: Vocab, programs: Sequence[int], strict: bool = True) -> None:
        if not vocab.has("Program"):
            raise ValueError("this tokenizer has no Program tokens; cannot restrict instruments")
        self.strict = strict
        self.mask = vocab.type_mask["Program"] & ~np.isin(vocab.program, list(programs))

    def banned(self, s: SeqState) -> np.ndarray:
        return self.mask


class Density:
    """Soft pull towards ``notes_per_beat``: penalize note starts when the running density is
    over 120 % of the target, and time-advancing tokens when it is under 80 %."""

    strict = False

    def __init__(self, vocab: Vocab, notes_per_beat: float, strict: bool = False) -> None:
        if notes_per_beat <= 0:
            raise ValueError(f"density {notes_per_beat} must be > 0 notes per beat")
        self.target = notes_per_beat
        self.notes, self.time = vocab.note_on, vocab.mask_of("TimeShift", "Position", "Bar")

    def banned(self, s: SeqState) -> np.ndarray | None:
        elapsed = max(s.time, 1.0)
        if s.notes > 1.2 * self.target * elapsed:
            return self.notes
        if s.notes < 0.8 * self.target * elapsed:
            return self.time
        return None


class TimeSignature:
    """Keep one meter: ban TimeSig tokens other than ``n/d`` (REMI bars then hold n beats)."""

    def __init__(self, vocab: Vocab, signature: str = "4/4", strict: bool = True) -> None:
        num, _, den = signature.partition("/")
        if not (num.isdigit() and den.isdigit()):
            raise ValueError(f"time signature {signature!r} must look like 3/4")
        self.strict = strict
        self.signature = (int(num), int(den))
        self.mask = np.zeros(vocab.size, dtype=bool)
        for i, ts in vocab.timesig.items():
            self.mask[i] = ts != self.signature
        if vocab.timesig:
            self.bar_len = float(num)  # MidiTok counts in beats of the denominator
        elif vocab.kind == "remi" and self.signature != (4, 4):
            raise ValueError(
                f"time signature {signature}: this REMI tokenizer has no TimeSig tokens, so every Bar "
                "token is a 4/4 bar; use 4/4 or a MIDILike/TSD model"
            )
        else:
            self.bar_len = int(num) * 4.0 / int(den)  # no TimeSig tokens: time counts in quarters

    def banned(self, s: SeqState) -> np.ndarray:
        return self.mask


class EndAt:
    """Length control: ban tokens that would move time past ``beats`` (pieces end exactly there)."""

    strict = True

    def __init__(self, vocab: Vocab, beats: float) -> None:
        self.vocab, self.beats = vocab, beats
        self.shift = vocab.mask_of("TimeShift")

    def banned(self, s: SeqState) -> np.ndarray:
        v = self.vocab
        left = self.beats - s.time
        out = self.shift & (v.beats > left + TIME_EPS)
        if left <= TIME_EPS:  # a note starting at the end would have no room to sound
            out = out | v.note_on
        if v.kind == "remi":
            out = out | (
                (v.position >= 0) & (s.bar_start + v.position / v.res >= self.beats - TIME_EPS)
            )
            if s.bar_start + s.bar_len > self.beats - TIME_EPS:
                out = out.copy()
                out[v.type_mask["Bar"]] = True
        return out


CONSTRAINTS = {
    "grammar": Grammar,
    "key": Key,
    "pitch_range": PitchRange,
    "polyphony": Polyphony,
    "programs": Programs,
    "density": Density,
    "time_signature": TimeSignature,
    "end_at": EndAt,
}


def parse_key(key: str) -> tuple[int, ...]:
    """``"D:min"`` -> pitch classes of that scale (modes: see ``SCALES``)."""
    tonic, _, mode = key.partition(":")
    mode = mode or "maj"
    if not tonic or tonic[0].upper() not in _NOTE_NAMES or mode not in SCALES:
        raise ValueError(f"key {key!r} must look like D:min or F#:maj (modes: {', '.join(SCALES)})")
    root = _NOTE_NAMES[tonic[0].upper()] + tonic[1:].count("#") - tonic[1:].count("b")
    return tuple(sorted((root + i) % 12 for i in SCALES[mode]))


class ConstraintSet:
    """The grammar plus any musical constraints, with one :class:`SeqState` per sequence."""

    def __init__(self, vocab: Vocab, constraints: Sequence = (), penalty: float = 4.0) -> None:
        self.vocab = vocab
        self.constraints = [Grammar(vocab), *constraints]
        self.penalty = penalty
        self.states: list[SeqState] = []

    def start(self, prompts: Sequence[Sequence[int]]) -> None:
        bar_len = next((c.bar_len for c in self.constraints if isinstance(c, TimeSignature)), 4.0)
        self.states = [replay(p, self.vocab, SeqState(bar_len=bar_len)) for p in prompts]

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, V) for the current states. A row never ends fully banned: tokens that
        open a note (Program, REMI Position) are banned when the strict musical constraints allow
        no note start (one step of look-ahead), and if a row is still left with nothing, the
        grammar alone decides (logged at debug level)."""
        B, V = logits.shape
        v = self.vocab
        hard = np.zeros((B, V), dtype=bool)
        soft = np.zeros((B, V), dtype=bool)
        grammar = np.zeros((B, V), dtype=bool)
        opens = v.mask_of("Program", "Position")[:V]
        for b, s in enumerate(self.states):
            musical = np.zeros(V, dtype=bool)
            for c in self.constraints:
                m = c.banned(s)
                if m is None:
                    continue
                m = m[:V]
                if c is self.constraints[0]:
                    grammar[b] = m
                elif c.strict:
                    musical |= m
                else:
                    soft[b] |= m
            hard[b] = grammar[b] | musical
            if musical.any() and not (v.note_on[:V] & ~musical).any():
                keep = hard[b].copy()
                hard[b] |= opens
                if v.kind == "midilike" and v.has(
                    "Program"
                ):  # a Program may still lead to a NoteOff
                    for (prog, _), (on, _) in s.sounding.items():
                        if on >= s.time - TIME_EPS:
                            continue  # began now: cannot end yet
                        hard[b, np.flatnonzero(v.program[:V] == prog)] = keep[v.program[:V] == prog]
        hard_t = torch.from_numpy(hard)
        dead = (hard_t | torch.isneginf(logits)).all(dim=-1)  # (B,)
        if dead.any():
            log.debug(
                "constraints left no token for rows %s; using the grammar alone",
                dead.nonzero().tolist(),
            )
            hard_t[dead] = torch.from_numpy(grammar)[dead]
        out = logits.masked_fill(hard_t, float("-inf"))
        if soft.any():
            out = out - torch.from_numpy(soft).to(out.dtype) * self.penalty
        return out

    def advance(self, tokens: Sequence[int]) -> None:
        for s, tok in zip(self.states, tokens, strict=True):
            advance(s, int(tok), self.vocab)

    def peek(self, row: int, tok: int) -> SeqState:
        """State of ``row`` after ``tok``, leaving the row unchanged (beam search look-ahead)."""
        return advance(copy.deepcopy(self.states[row]), int(tok), self.vocab)

    def reorder(self, indices: Sequence[int]) -> None:
        self.states = [copy.deepcopy(self.states[int(i)]) for i in indices]


def finish(ids: list[int], vocab: Vocab) -> list[int]:
    """Close a sequence so it decodes cleanly: cut a half-written event, release MIDILike notes
    still sounding (after one grid step if they started just now) and append EOS."""
    state = replay(ids, vocab)
    if state.phase == "done":
        return list(ids)
    out = list(ids[: state.boundary])
    state = replay(out, vocab)
    if vocab.kind == "midilike" and state.sounding:
        if any(on >= state.time - TIME_EPS for on, _ in state.sounding.values()):
            out.append(vocab.id_of("TimeShift", 1 / vocab.res))
        for prog, pitch in sorted(state.sounding):
            if vocab.has("Program"):
                out.append(int(np.flatnonzero(vocab.program == prog)[0]))
            out.append(vocab.id_of("NoteOff", pitch))
    out.append(vocab.eos_id)
    return out
