"""MusicTokenizer: scores <-> one stream of token ids (the only module that imports MidiTok).

A thin layer over MidiTok 3.1 (MIDILike, REMI, TSD, optional BPE) that adds what the rest of Aurl
needs: ``BOS ... EOS`` framing, a token-type table, per-token time positions in beats, note counts,
id-level transposition tables, a bit-exact ``save``/``load`` and a printable vocabulary layout.

Decisions (see docs/data_format.md):
- ``use_time_signatures=False`` explicitly: miditok 3.1.0 defaults it to True (contrary to its
  docstring), which makes a "beat" the time-signature denominator and puts x/8 music on a 64th
  grid (measured, /work/shared/FACTS.md). Bars are therefore always ``BEATS_PER_BAR`` = 4 beats.
- All tracks go into one stream with ``Program_*`` tokens (drums as ``Program_-1`` and
  ``DrumOn``/``PitchDrum`` tokens); MidiTok merges tracks that share a program (Bach: music21 writes
  one program-0 track per voice, so its voices merge). The cost, measured on every 10th chorale and
  40 POP909 songs against ``use_programs=False``: MIDILike +60 % tokens on Bach / +51 % on POP909
  (a ``Program`` before every NOTE_ON *and* NOTE_OFF), REMI and TSD +29-30 %. We keep programs by
  default so instruments survive in multi-track pop, but with ``program_changes`` (default on) a
  ``Program`` token is written only when the instrument changes, which removes most of that cost. ``use_programs=False`` merges
  all pitched tracks into one piano track and drops drum tracks.
- MIDILike pairs NOTE_OFF with the oldest open NOTE_ON of the same pitch (FIFO), so a same-pitch
  note nested inside a longer one cannot round-trip. :meth:`MusicTokenizer.preprocess` ends the
  outer note where the inner one starts (what a MIDI synth does on a re-trigger); measured on
  ``real_midi``: this is what made ``d8faddb…mid`` inexact (10 of 2,674 notes).
- BPE ids are encoded bar by bar (no merge crosses a bar line), splitting the base ids with our own
  beat positions so that prepared base ids can be BPE-encoded without the score. MidiTok's own
  ``encode_ids_split="bar"`` is off: it prepends a Metaspace ``▁`` token to every bar, which made
  BPE sequences *longer* than the base ones on a small training set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import miditok
import numpy as np
from miditok import TokSequence
from symusic import Note, Score, Track

from aurl.config import TokenizerConfig, atomic_write_text, from_dict, to_dict

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
BEATS_PER_BAR = 4
"""Bars are 4 beats: time signatures are not tokenized (see module docstring)."""

TOKEN_TYPES = ("special", "pitch", "time", "velocity", "program", "bar/position", "other")
"""Names of the categories returned by :meth:`MusicTokenizer.token_type` (index = category)."""

_KINDS = {"midilike": miditok.MIDILike, "remi": miditok.REMI, "tsd": miditok.TSD}
_TYPE_OF_PREFIX = {
    "PAD": 0, "BOS": 0, "EOS": 0, "MASK": 0,
    "NoteOn": 1, "NoteOff": 1, "DrumOn": 1, "DrumOff": 1, "Pitch": 1, "PitchDrum": 1,
    "TimeShift": 2, "Duration": 2, "Rest": 2,
    "Velocity": 3,
    "Program": 4,
    "Bar": 5, "Position": 5,
}  # fmt: skip
_NOTE_START = ("NoteOn", "DrumOn", "Pitch", "PitchDrum")
_PITCHED = ("NoteOn", "NoteOff", "Pitch")  # drum tokens never transpose


def _miditok_config(cfg: TokenizerConfig) -> miditok.TokenizerConfig:
    lo, hi = cfg.pitch_range
    return miditok.TokenizerConfig(
        pitch_range=(lo, hi - 1),  # MidiTok's upper bound is inclusive, ours is one-past
        beat_res={(0, cfg.max_beats): cfg.steps_per_beat},
        num_velocities=cfg.num_velocities,
        special_tokens=["PAD", "BOS", "EOS"],  # PAD must be id 0: the model ignores it in the loss
        use_programs=cfg.use_programs,
        one_token_stream_for_programs=True,
        program_changes=cfg.use_programs and cfg.program_changes,
        use_time_signatures=False,
        use_tempos=cfg.use_tempos and cfg.kind != "midilike",
        use_chords=False,
        use_rests=False,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        use_control_changes=False,
        remove_duplicated_notes=False,
        # "no": MidiTok's own bar split adds a Metaspace "▁" token at every bar start (measured:
        # BPE output longer than its input on a small corpus); we split bars ourselves instead.
        encode_ids_split="no",
    )


def _nested_pass(time: np.ndarray, end: np.ndarray, pitch: np.ndarray) -> int:
    """One sweep ending each note where a nested same-pitch note starts; returns notes changed."""
    fixed = 0
    open_by_pitch: dict[int, list[int]] = {}
    for i in np.lexsort((-end, time, pitch)):
        p, t, e = int(pitch[i]), int(time[i]), int(end[i])
        still_open = []
        for j in open_by_pitch.get(p, []):
            if end[j] <= t:
                continue
            if time[j] < t and end[j] > e:
                end[j] = t
                fixed += 1
                continue
            still_open.append(j)
        still_open.append(i)
        open_by_pitch[p] = still_open
    return fixed


def _nested_candidates(time: np.ndarray, end: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Pitches with a note ending before an earlier same-pitch note ends (vectorized pre-check)."""
    order = np.lexsort((-end, time, pitch))
    p, e = pitch[order].astype(np.int64), end[order].astype(np.int64)
    big = int(e.max()) + 1
    running = np.maximum.accumulate(p * big + e) - p * big  # max end so far within the pitch
    prev = np.concatenate([[-1], running[:-1]])
    same = np.concatenate([[False], p[1:] == p[:-1]])
    return np.unique(p[same & (e < prev)])


def _fix_nested_notes(track: Track) -> int:
    """End a note where a nested same-pitch note starts (MIDILike FIFO pairing); returns fixes.

    Repeated to a fixed point: shortening one note can nest it inside an earlier one (POP909 016).
    Only pitches flagged by the vectorized pre-check go through the Python sweep.
    """
    notes = track.notes.numpy()
    if len(notes["time"]) < 2:
        return 0
    time, pitch = notes["time"], notes["pitch"]
    end = time + notes["duration"]
    flagged = _nested_candidates(time, end, pitch)
    if len(flagged) == 0:
        return 0
    sel = np.flatnonzero(np.isin(pitch, flagged))
    sub_end = end[sel].copy()
    total = 0
    while fixed := _nested_pass(time[sel], sub_end, pitch[sel]):
        total += fixed
    if total:
        end[sel] = sub_end
        track.notes = Note.from_numpy(
            time, (end - time).astype(time.dtype), pitch, notes["velocity"]
        )
        track.notes.sort()
    return total


def _merge_pitched_tracks(score: Score) -> Score:
    """One piano track holding every pitched note (use_programs=False); drum tracks are dropped."""
    merged = Track(program=0, name="merged")
    for track in score.tracks:
        if not track.is_drum:
            merged.notes.extend(track.notes)
    merged.notes.sort()
    score.tracks = [merged] if len(merged.notes) else []
    return score


class MusicTokenizer:
    """Score <-> ``BOS ... EOS`` token ids for one :class:`TokenizerConfig` (plus BPE if trained)."""

    def __init__(self, cfg: TokenizerConfig, _miditok: miditok.MusicTokenizer | None = None):
        self.cfg = cfg
        self._tok = _miditok if _miditok is not None else _KINDS[cfg.kind](_miditok_config(cfg))
        self._build_tables()

    # -- vocabulary ------------------------------------------------------------------------

    def _build_tables(self) -> None:
        vocab = self._tok.vocab  # base vocabulary: token string -> id
        self.base_vocab: list[str] = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        self.pad_id, self.bos_id, self.eos_id = (
            vocab["PAD_None"],
            vocab["BOS_None"],
            vocab["EOS_None"],
        )
        n = len(self.base_vocab)
        self._base_type = np.full(n, TOKEN_TYPES.index("other"), dtype=np.int8)
        self._base_steps = np.zeros(n, dtype=np.int64)  # time advance in grid steps
        self._base_is_note = np.zeros(n, dtype=bool)
        self._base_is_bar = np.zeros(n, dtype=bool)
        self._base_position = np.full(n, -1, dtype=np.int64)
        for i, tok in enumerate(self.base_vocab):
            prefix, _, value = tok.partition("_")
            self._base_type[i] = _TYPE_OF_PREFIX.get(prefix, TOKEN_TYPES.index("other"))
            self._base_is_note[i] = prefix in _NOTE_START
            self._base_is_bar[i] = prefix == "Bar"
            if prefix == "Position":
                self._base_position[i] = int(value)
            if prefix in ("TimeShift", "Rest"):
                beats, steps, res = (int(x) for x in value.split("."))
                self._base_steps[i] = (beats * res + steps) * self.cfg.steps_per_beat // res
        # BPE: each id expands to a sequence of base ids (identity when not trained)
        self._expansion: list[np.ndarray] | None = None
        if self.is_trained:
            self._expansion = []
            for i in range(self._tok.vocab_size):
                seq = TokSequence(ids=[i], are_ids_encoded=True)
                self._tok.decode_token_ids(seq)
                self._expansion.append(np.asarray(seq.ids, dtype=np.int64))

    @property
    def is_trained(self) -> bool:
        """True when BPE merges have been learned."""
        return bool(self._tok.is_trained)

    @property
    def vocab_size(self) -> int:
        """Number of ids the model must embed (BPE vocabulary when trained)."""
        return int(self._tok.vocab_size) if self.is_trained else len(self.base_vocab)

    @property
    def hash(self) -> str:
        """Config hash; when BPE is trained it also covers the learned merges."""
        if not self.is_trained:
            return self.cfg.hash()
        blob = (self.cfg.hash() + self._tok._model.to_str()).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # -- encode / decode --------------------------------------------------------------------

    def preprocess(self, score: Score) -> Score:
        """The tokenizer's own quantization: ``decode(encode(s))`` reproduces this note for note."""
        score = score.copy()
        if not self.cfg.use_programs:
            score = _merge_pitched_tracks(score)
        out = self._tok.preprocess_score(score)
        if self.cfg.kind == "midilike":
            fixed = sum(_fix_nested_notes(t) for t in out.tracks)
            if fixed:
                log.debug("ended %d notes at a nested same-pitch onset (MIDILike)", fixed)
        return out

    def encode_base(self, score: Score) -> np.ndarray:
        """Base (pre-BPE) ids ``BOS ... EOS`` of a score."""
        seq = self._tok.encode(self.preprocess(score), encode_ids=False, no_preprocess_score=True)
        if isinstance(seq, list):  # use_programs=False: MidiTok returns one sequence per track
            seq = seq[0] if seq else TokSequence(ids=[])
        ids = seq.ids
        return np.asarray([self.bos_id, *ids, self.eos_id], dtype=np.int64)

    def encode(self, score: Score) -> list[int]:
        """One stream ``BOS ... EOS`` (all tracks, programs as tokens), BPE-encoded if trained."""
        return self.apply_bpe(self.encode_base(score)).tolist()

    def apply_bpe(self, base_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """BPE-encode base ids bar by bar (identity when untrained); BOS/EOS/PAD stay as they are."""
        base = np.asarray(base_ids, dtype=np.int64)
        if not self.is_trained:
            return base
        out: list[int] = []
        for chunk, special in self._bar_chunks(base):
            if special:
                out.extend(chunk.tolist())
            else:
                words = [self._tok._ids_to_bytes(chunk.tolist(), as_one_str=True)]
                out.extend(self._tok._model.encode(words, is_pretokenized=True).ids)
        return np.asarray(out, dtype=np.int64)

    def _bar_chunks(self, base: np.ndarray) -> Iterable[tuple[np.ndarray, bool]]:
        """Split base ids at bar lines and around special tokens: (chunk, is_special)."""
        if len(base) == 0:
            return
        bars = np.floor_divide(self._base_beats(base), BEATS_PER_BAR).astype(np.int64)
        special = self._base_type[base] == 0
        cut = (bars[1:] != bars[:-1]) | special[1:] | special[:-1]  # specials stand alone
        for chunk in np.split(base, np.flatnonzero(cut) + 1):
            yield chunk, bool(self._base_type[chunk[0]] == 0)

    def expand(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Base ids of a (possibly BPE) id sequence; ids outside the vocabulary raise ValueError."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"token ids must be in 0..{self.vocab_size - 1}; got {arr.min()}..{arr.max()}"
            )
        if self._expansion is None:
            return arr
        if arr.size == 0:
            return arr
        return np.concatenate([self._expansion[i] for i in arr])

    def decode(self, ids: Sequence[int] | np.ndarray) -> Score:
        """Score from ids; tolerates missing BOS/EOS and PAD anywhere."""
        base = self.expand(ids)
        base = base[self._base_type[base] != 0]
        if base.size == 0:
            return Score(self._tok.time_division)
        if not self.cfg.use_programs:
            return self._tok.decode([base.tolist()])
        return self._tok.decode(base.tolist())

    # -- inspection ----------------------------------------------------------------------------

    def _base_beats(self, base: np.ndarray) -> np.ndarray:
        """Time position in beats after each base token is read (Bar = start of its bar)."""
        steps = self._base_steps[base]
        if self.cfg.kind != "remi":
            return np.cumsum(steps) / self.cfg.steps_per_beat
        # REMI: Bar opens the next bar, Position_k sets the step inside the current bar
        is_bar = self._base_is_bar[base]
        marker = np.where(is_bar, 0, self._base_position[base])  # -1 where neither
        last = np.maximum.accumulate(np.where(marker >= 0, np.arange(len(base)), 0))
        pos = np.maximum(marker[last], 0) if len(base) else marker
        bar = np.maximum(np.cumsum(is_bar) - 1, 0)
        return (bar * BEATS_PER_BAR * self.cfg.steps_per_beat + pos) / self.cfg.steps_per_beat

    def token_beats(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Time in beats after each token is read (a BPE token takes its last base token's)."""
        arr = np.asarray(ids, dtype=np.int64)
        base = self.expand(arr)
        beats = self._base_beats(base)
        if self._expansion is None:
            return beats
        ends = np.cumsum([len(self._expansion[i]) for i in arr]) - 1
        return beats[ends]

    def token_type(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Category index into ``TOKEN_TYPES`` per id (a BPE token takes its first base token's)."""
        arr = np.asarray(ids, dtype=np.int64)
        if self._expansion is not None:
            arr = np.asarray([self._expansion[i][0] for i in arr], dtype=np.int64)
        return self._base_type[arr]

    def count_notes(self, ids: Sequence[int] | np.ndarray) -> int:
        """Notes in an id sequence (note-on / pitch tokens after BPE expansion)."""
        return int(self._base_is_note[self.expand(ids)].sum())

    def transpose_table(self, semitones: int) -> np.ndarray | None:
        """Id -> id map shifting pitched notes by ``semitones``; -1 where the pitch leaves the range.

        None for a BPE tokenizer: merged tokens bake in pitches, so transpose before encoding.
        """
        if self.is_trained:
            return None
        table = np.arange(len(self.base_vocab), dtype=np.int64)
        vocab = self._tok.vocab
        for i, tok in enumerate(self.base_vocab):
            prefix, _, value = tok.partition("_")
            if prefix in _PITCHED:
                table[i] = vocab.get(f"{prefix}_{int(value) + semitones}", -1)
        return table

    def describe(self) -> str:
        """Vocabulary layout: id ranges per token type, sizes and the config hash."""
        lines = [
            f"tokenizer {self.cfg.kind}  hash {self.hash}  vocab {self.vocab_size}"
            + (f" (base {len(self.base_vocab)} + BPE)" if self.is_trained else ""),
            f"config {json.dumps(to_dict(self.cfg))}",
            f"grid 1/{self.cfg.steps_per_beat} beat, {BEATS_PER_BAR} beats per bar, "
            f"pad={self.pad_id} bos={self.bos_id} eos={self.eos_id}",
            f"{'ids':>11}  {'type':<12} {'count':>5}  first .. last",
        ]
        start = 0
        for i in range(1, len(self.base_vocab) + 1):
            if i == len(self.base_vocab) or self._group(i) != self._group(start):
                name = TOKEN_TYPES[self._base_type[start]]
                lines.append(
                    f"{start:>5}-{i - 1:<5}  {name:<12} {i - start:>5}  "
                    f"{self.base_vocab[start]} .. {self.base_vocab[i - 1]}"
                )
                start = i
        if self.is_trained:
            lines.append(f"{len(self.base_vocab):>5}-{self.vocab_size - 1:<5}  BPE merges")
        return "\n".join(lines)

    def _group(self, i: int) -> str:
        return "special" if self._base_type[i] == 0 else self.base_vocab[i].partition("_")[0]

    # -- BPE ----------------------------------------------------------------------------------

    def train_bpe(self, pieces: Iterable[Score | np.ndarray], vocab_size: int) -> None:
        """Learn BPE merges to ``vocab_size`` from scores or base id arrays (MidiTok's ``train``)."""
        if self.is_trained:
            raise ValueError("this tokenizer already has BPE merges; build a fresh one to retrain")
        if vocab_size <= len(self.base_vocab):
            raise ValueError(
                f"bpe vocab_size={vocab_size} must exceed the base vocabulary ({len(self.base_vocab)})"
            )
        words: list[list[str]] = []
        for piece in pieces:
            base = self.encode_base(piece) if isinstance(piece, Score) else np.asarray(piece)
            chunks = [c for c, special in self._bar_chunks(base) if not special]
            words.append([self._tok._ids_to_bytes(c.tolist(), as_one_str=True) for c in chunks])
        if not words:
            raise ValueError("train_bpe needs at least one piece")
        self._tok.train(vocab_size=vocab_size, model="BPE", iterator=words)
        self.cfg = from_dict(TokenizerConfig, {**to_dict(self.cfg), "bpe_vocab_size": vocab_size})
        self._build_tables()

    # -- persistence --------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` (our config + MidiTok's full state), atomically."""
        path = Path(directory) / TOKENIZER_FILE
        payload = {"aurl": to_dict(self.cfg), "hash": self.hash, "miditok": self._tok.to_dict()}
        atomic_write_text(path, json.dumps(payload))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> MusicTokenizer:
        """Reload a tokenizer saved by :meth:`save` (a directory or the json file itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer here; run `aurl prepare` first")
        try:
            payload = json.loads(path.read_text())
            cfg = from_dict(TokenizerConfig, payload["aurl"])
            state = payload["miditok"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an aurl tokenizer file ({exc})") from None
        with tempfile.TemporaryDirectory() as tmp:  # MidiTok only loads from a file path
            tmp_file = Path(tmp) / TOKENIZER_FILE
            tmp_file.write_text(json.dumps(state))
            tok = _KINDS[cfg.kind](params=tmp_file)
        out = cls(cfg, _miditok=tok)
        if out.hash != payload.get("hash", out.hash):
            raise ValueError(f"{path}: hash mismatch ({payload['hash']} saved, {out.hash} rebuilt)")
        return out
