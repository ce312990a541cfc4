"""Named, stateful logit masks that keep generated token streams decodable and musical.

One :class:`SeqState` per sequence is advanced token by token (``aurl.generation.state``); each constraint is
a small object whose ``banned(state)`` returns a boolean mask over the vocabulary (or ``None``).
:class:`ConstraintSet` applies them to a batch of logits: **strict** constraints set banned logits
to ``-inf``, **soft** ones subtract a penalty (nats). The grammar is always strict: it is what
guarantees that every sequence the sampler returns can be decoded by the tokenizer. Musical
constraints as single-purpose masks follow jthickstun/anticipation's ``sample.py``.

Tokens the grammar does not model (drums, tempo, MASK) are banned by the grammar. A BPE merge is
allowed when the first base token it stands for is allowed now and none of its base tokens is banned
by a musical constraint now (:meth:`ConstraintSet._merges`); its penalties are the sum of theirs.

Shape letters: B batch, V vocabulary.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch

from aurl.generation.state import TIME_EPS, SeqState, Vocab, advance, replay

__all__ = [
    "CONSTRAINTS",
    "SCALES",
    "TIME_EPS",
    "ConstraintSet",
    "Density",
    "EndAt",
    "EndNotBefore",
    "Grammar",
    "Key",
    "MaxDuration",
    "PitchRange",
    "Polyphony",
    "Programs",
    "Release",
    "SeqState",
    "TimeSignature",
    "Vocab",
    "advance",
    "finish",
    "parse_key",
    "replay",
]  # fmt: skip

log = logging.getLogger(__name__)

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
        if starts != "Program" or v.program_changes:
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
            "position": v.mask_of(starts, *note_start)
            if v.program_changes
            else (v.mask_of(starts) if starts == "Program" else v.mask_of(*note_start)),
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


def _oldest_open_onset(s: SeqState) -> float | None:
    """Onset (beats) of the oldest MIDILike note still waiting for its NoteOff; None if none."""
    return min((on for on, end in s.sounding.values() if end == float("inf")), default=None)


class MaxDuration:
    """No note outlives ``beats`` (the longest note of the training corpus, ``SampleConfig``).

    REMI/TSD: Duration tokens longer than the cap are banned. MIDILike has no durations: a note
    lasts until its NoteOff, and once its NoteOn has slid out of the model's context window nothing
    tells the model the note is still open (issue 15 measured notes of 120-280 beats in 3-minute
    pieces). So time may only advance up to the deadline of the oldest open note; at the deadline
    note starts and meter changes are banned too, which leaves NoteOff (of that note or others) as
    the only way on. A note may end up to one grid step before the cap when no TimeShift fits."""

    strict = True

    def __init__(self, vocab: Vocab, beats: float) -> None:
        if not beats > 0:
            raise ValueError(f"max note duration {beats} beats must be > 0")
        self.vocab, self.beats = vocab, float(beats)
        self.shift = vocab.mask_of("TimeShift")
        self.stall = vocab.note_on | vocab.mask_of("TimeSig")
        self.long = vocab.mask_of("Duration") & (vocab.beats > self.beats + TIME_EPS)

    def banned(self, s: SeqState) -> np.ndarray | None:
        if self.vocab.kind != "midilike":
            return self.long
        oldest = _oldest_open_onset(s)
        if oldest is None:
            return None
        left = oldest + self.beats - s.time  # beats until the oldest note must end
        out = self.shift & (self.vocab.beats > left + TIME_EPS)
        if left <= TIME_EPS:
            out = out | self.stall
        return out


class Release:
    """Soft pull to end notes held past the corpus's usual longest (its 99.9th percentile, Bach:
    4 beats): a time shift costs ``rate`` nats per beat that it carries the oldest open note past
    ``beats`` (REMI/TSD: a Duration, per beat over). A hazard that grows with the overage, not a
    flat penalty: with a flat 4 nats the shipped model still held 2.2 % of its notes past 4 beats
    (Bach: 0.05 %), since it gives the NoteOff of a pedal note ~9 nats less than a time shift.
    :class:`MaxDuration` is the hard wall behind it. Returns penalties (nats), not a mask."""

    strict = False

    def __init__(self, vocab: Vocab, beats: float, rate: float = 4.0) -> None:
        if not beats > 0 or not rate > 0:
            raise ValueError(f"release after {beats} beats at {rate} nats/beat: both must be > 0")
        self.vocab, self.beats, self.rate = vocab, float(beats), float(rate)
        self.shift = vocab.mask_of("TimeShift")
        self.duration = vocab.mask_of("Duration")
        over = np.maximum(vocab.beats - self.beats, 0.0)
        self.long = np.where(self.duration, over * self.rate, 0.0)

    def banned(self, s: SeqState) -> np.ndarray | None:
        if self.vocab.kind != "midilike":
            return self.long
        oldest = _oldest_open_onset(s)
        if oldest is None:
            return None
        deadline = oldest + self.beats
        over = np.maximum(s.time + self.vocab.beats - deadline, 0.0)  # (V,) beats past it
        return np.where(self.shift, over * self.rate, 0.0)


class Programs:
    """Only these instruments (General MIDI programs), e.g. the tracks of the piece being infilled."""

    def __init__(self, vocab: Vocab, programs: Sequence[int], strict: bool = True) -> None:
        if not vocab.has("Program"):
            raise ValueError("this tokenizer has no Program tokens; cannot restrict instruments")
        bad = [p for p in programs if not 0 <= int(p) <= 127]
        if bad or not programs:
            raise ValueError(f"programs {list(programs)} must be 1+ General MIDI programs 0-127")
        self.strict, self.programs = strict, {int(p) for p in programs}
        self.mask = vocab.type_mask["Program"] & ~np.isin(vocab.program, list(programs))
        self.note_on = vocab.note_on

    def banned(self, s: SeqState) -> np.ndarray:
        return self.mask

    def gate(self, s: SeqState) -> np.ndarray | None:
        """With change-only Program tokens a note may follow without one; in a program that is
        not allowed (the implicit program 0 at the start, say) a note must wait for a Program
        token. Applied after the look-ahead of :meth:`ConstraintSet.apply`, which would otherwise
        read "no note may start" as "ban the Program tokens" too."""
        return None if s.program in self.programs else self.note_on


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


class EndNotBefore:
    """Length control from below: no EOS before ``beats`` (a VAE segment of K bars fills K bars)."""

    strict = True

    def __init__(self, vocab: Vocab, beats: float) -> None:
        self.beats = beats
        self.eos = np.zeros(vocab.size, dtype=bool)
        self.eos[vocab.eos_id] = True

    def banned(self, s: SeqState) -> np.ndarray | None:
        return self.eos if s.time < self.beats - TIME_EPS else None


CONSTRAINTS = {
    "grammar": Grammar,
    "key": Key,
    "pitch_range": PitchRange,
    "polyphony": Polyphony,
    "programs": Programs,
    "density": Density,
    "time_signature": TimeSignature,
    "end_at": EndAt,
    "end_not_before": EndNotBefore,
    "max_duration": MaxDuration,
    "release": Release,
}


def _gate(constraint, s: SeqState) -> np.ndarray | None:
    gate = getattr(constraint, "gate", None)
    return gate(s) if gate is not None else None


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
        self._merge_ids, self._merge_base = _merge_table(vocab)
        self._merge_notes = _merge_note_needs(vocab, self._merge_base)

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
        graded = np.zeros((B, V))  # nats, from soft constraints that return float penalties
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
                elif m.dtype == bool:
                    soft[b] |= m
                else:
                    graded[b] += m
            hard[b] = grammar[b] | musical
            gates = [g[:V] for c in self.constraints if (g := _gate(c, s)) is not None]
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
            for g in gates:
                hard[b] |= g
                musical |= g
            if len(self._merge_ids):
                self._merges(b, hard, musical, soft, graded)
        hard_t = torch.from_numpy(hard)
        dead = (hard_t | torch.isneginf(logits)).all(dim=-1)  # (B,)
        if dead.any():
            log.debug(
                "constraints left no token for rows %s; using the grammar alone",
                dead.nonzero().tolist(),
            )
            hard_t[dead] = torch.from_numpy(grammar)[dead]
        out = logits.masked_fill(hard_t, float("-inf"))
        if soft.any() or graded.any():
            out = out - torch.from_numpy(soft * self.penalty + graded).to(out.dtype)
        return out

    def _merges(self, b: int, hard, musical, soft, graded) -> None:
        """Row ``b``'s verdict on the BPE merges, from that on the base tokens they stand for.

        The first base token must pass everything (grammar included); the later ones only the
        musical constraints, as judged in the current state. Merges are fragments of training
        sequences, so after a valid first token their own event order is the grammar's (REMI
        positions are checked only at the first token). MIDILike's note bookkeeping is checked on
        the sounding notes: a later NoteOn needs its pitch silent, a later NoteOff (of a note the
        merge did not open) a pitch sounding since before now, and merges that change program
        inside are not used. Musical rules that depend on time (a voice limit reached inside a
        merge) are judged on the state before it: close, not exact."""
        V = hard.shape[1]
        keep = self._merge_ids < V
        ids, base = self._merge_ids[keep], self._merge_base[keep]  # (M,), (M, K) padded with -1
        pad = base < 0
        idx = np.where(pad, 0, base)
        later = np.where(pad, False, musical[idx])
        later[:, 0] = hard[b][base[:, 0]]
        banned = later.any(axis=1)
        if self._merge_notes is not None:
            silent, sounding, program_change = (x[keep] for x in self._merge_notes)
            s = self.states[b]
            mine = {
                p: on for (prog, p), (on, _) in s.sounding.items()
                if prog == s.program or not self.vocab.has("Program")
            }  # fmt: skip
            now = np.zeros(128, dtype=bool)
            now[list(mine)] = True
            before = np.zeros(128, dtype=bool)
            before[[p for p, on in mine.items() if on < s.time - TIME_EPS]] = True
            banned |= (silent & now).any(axis=1) | (sounding & ~before).any(axis=1) | program_change
        hard[b, ids] = banned
        soft[b, ids] = np.where(pad, False, soft[b][idx]).any(axis=1)
        graded[b, ids] = np.where(pad, 0.0, graded[b][idx]).sum(axis=1)

    def advance(self, tokens: Sequence[int]) -> None:
        for s, tok in zip(self.states, tokens, strict=True):
            advance(s, int(tok), self.vocab)

    def peek(self, row: int, tok: int) -> SeqState:
        """State of ``row`` after ``tok``, leaving the row unchanged (beam search look-ahead)."""
        return advance(copy.deepcopy(self.states[row]), int(tok), self.vocab)

    def reorder(self, indices: Sequence[int]) -> None:
        self.states = [copy.deepcopy(self.states[int(i)]) for i in indices]


def _merge_table(vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """BPE merge ids (M,) and the base ids each stands for (M, K), padded with -1."""
    if vocab.expansion is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.int64)
    ids = [i for i in range(min(vocab.size, len(vocab.expansion))) if vocab.types[i] == "BPE"]
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.int64)
    width = max(len(vocab.expansion[i]) for i in ids)
    base = np.full((len(ids), width), -1, dtype=np.int64)
    for row, i in enumerate(ids):
        base[row, : len(vocab.expansion[i])] = vocab.expansion[i]
    return np.asarray(ids, dtype=np.int64), base


def _merge_note_needs(vocab: Vocab, base: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """MIDILike: per merge, the pitches its later NoteOns need silent (M, 128), the pitches its
    later NoteOffs need sounding from before (M, 128; notes the merge opens itself excluded), and
    whether it holds a Program token after its first (M,). None for other schemes."""
    if vocab.kind != "midilike" or not len(base):
        return None
    M = len(base)
    silent = np.zeros((M, 128), dtype=bool)
    sounding = np.zeros((M, 128), dtype=bool)
    program_change = np.zeros(M, dtype=bool)
    on, off = vocab.mask_of("NoteOn"), vocab.mask_of("NoteOff")
    for m, row in enumerate(base):
        opened: set[int] = set()
        closed: set[int] = set()
        for k, t in enumerate(row[row >= 0]):
            p = int(vocab.pitch[t])
            if on[t]:
                opened.add(p)
                if k > 0 and p not in closed:
                    silent[m, p] = True
            elif off[t]:
                closed.add(p)
                if k > 0 and p not in opened:
                    sounding[m, p] = True
            elif k > 0 and vocab.program[t] >= -1:
                program_change[m] = True
    return silent, sounding, program_change


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
