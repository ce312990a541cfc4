"""``aurl generate`` / ``aurl infill``: bundle + prompt + constraints -> files + ``samples.json``.

The ``*_from_args`` functions only translate CLI flags; :func:`generate` and :func:`infill` take
plain keywords so the HTTP server can call them. Each piece ``i`` is sampled with its own seed
(``seed + i``), so ``samples.json`` records a one-piece command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import symusic

from aurl.config import atomic_write_text
from aurl.generation import constraints as C
from aurl.generation.export import SOUNDFONT_HINT, export_piece
from aurl.generation.options import check_options, parse_programs
from aurl.generation.sample import StopRule, beam_search, sample, seconds_to_beats, steps_bar

log = logging.getLogger(__name__)

DEFAULT_BPM = 120.0
"""Tempo when neither a prompt nor the model's corpus gives one (``sample.bpm``, measured at
training): MIDI's own default, and the tempo of 340 of music21's 410 Bach chorale exports."""
FALLBACK_NOTE_BEATS = 16.0
"""Note-length cap for models trained before ``sample.max_note_beats`` was measured: four 4/4 bars
(Bach's longest note is 12 beats, POP909's and MAESTRO's are well under 16)."""
TOKENS_PER_BEAT_CAP = 64
"""Token budget per beat asked for (Bach averages ~18 tokens per beat), so a model that never
advances time still stops."""


@dataclass
class Piece:
    """One written piece and what reproduces it."""

    index: int
    seed: int
    new_tokens: int
    notes: int
    beats: float
    seconds: float
    files: dict[str, str]
    reproduce: str = ""


@dataclass
class Summary:
    """What was written where; ``render()`` is the one-screen report the CLI prints."""

    out_dir: Path
    model: str
    pieces: list[Piece] = field(default_factory=list)
    elapsed_s: float = 0.0
    tokens_per_s: float = 0.0
    command: str = "generate"
    warnings: list[str] = field(default_factory=list)
    """Printed under the pieces (e.g. identical outputs from a VAE whose latents carry little)."""

    def render(self) -> str:
        lines = [
            f"aurl {self.command}: {len(self.pieces)} piece(s) from {self.model} -> {self.out_dir}"
        ]
        for p in self.pieces:
            kinds = ", ".join(
                Path(v).suffix[1:]
                for k, v in p.files.items()
                if k in ("midi", "musicxml", "png", "wav")
            )
            errors = [k for k in p.files if k.endswith("_error")]
            lines.append(
                f"  piece_{p.index:02d}  seed {p.seed}  {p.notes} notes  {p.beats:.1f} beats "
                f"({p.seconds:.1f} s)  {p.new_tokens} new tokens  [{kinds}]"
                + (f"  FAILED: {', '.join(errors)}" if errors else "")
            )
        renderers = {p.files.get("renderer") for p in self.pieces} - {None}
        if "builtin" in renderers:
            lines.append(f"  audio: built-in synth (for General MIDI sounds: {SOUNDFONT_HINT})")
        elif renderers:
            lines.append(f"  audio: {', '.join(sorted(renderers))}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        lines.append(
            f"  {self.tokens_per_s:.0f} tokens/s, {self.elapsed_s:.1f} s; settings in {self.out_dir / 'samples.json'}"
        )
        return "\n".join(lines)


def load_model(path: str | os.PathLike):
    """The bundle at ``path``, with an actionable error when there is none."""
    from aurl.bundle import load_bundle

    path = Path(path)
    if not path.exists():
        raise ValueError(
            f"no model at {path}: train one with `aurl prepare bach --out data/bach && aurl train "
            f"--config configs/bach_small.yaml --out runs/bach_small && aurl export runs/bach_small "
            f"--out {path}` or pass --model DIR"
        )
    return load_bundle(path)


def parse_range(text: str, what: str) -> tuple[int, int]:
    """``"36-84"`` -> (36, 84)."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
        raise ValueError(f"{what} {text!r} must look like LOW-HIGH with LOW <= HIGH, e.g. 36-84")
    return int(lo), int(hi)


def build_constraints(
    vocab: C.Vocab,
    *,
    key: str | None = None,
    pitch_range: tuple[int, int] | None = None,
    max_polyphony: int | None = None,
    density: float | None = None,
    soft: bool = False,
    end_beats: float | None = None,
    time_signature: str | None = None,
    programs: tuple[int, ...] | None = None,
    max_note_beats: float | None = None,
    release_after_beats: float | None = None,
) -> C.ConstraintSet:
    """The grammar plus the named constraints asked for (strict unless ``soft``). The note-length
    cap and the programs are always strict: they keep pieces decodable and in one instrument."""
    strict = not soft
    chosen: list = []
    if max_note_beats:
        chosen.append(C.MaxDuration(vocab, max_note_beats))
    if release_after_beats and (not max_note_beats or release_after_beats < max_note_beats):
        chosen.append(C.Release(vocab, release_after_beats))
    if programs and vocab.has("Program"):
        chosen.append(C.Programs(vocab, programs))
    if key:
        chosen.append(C.Key(vocab, key, strict=strict))
    if pitch_range:
        chosen.append(C.PitchRange(vocab, *pitch_range, strict=strict))
    if max_polyphony:
        chosen.append(C.Polyphony(vocab, max_polyphony, strict=strict))
    if density:
        chosen.append(C.Density(vocab, density))
    if time_signature:
        chosen.append(C.TimeSignature(vocab, time_signature))
    if end_beats is not None:
        chosen.append(C.EndAt(vocab, end_beats))
    return C.ConstraintSet(vocab, chosen)


def prompt_signature(ids: list[int], vocab: C.Vocab, score: symusic.Score | None) -> str:
    """The last time signature the prompt's tokens set, else the prompt file's first, else 4/4."""
    sigs = [vocab.timesig[i] for i in ids if i in vocab.timesig]
    if not sigs and score is not None and len(score.time_signatures) and vocab.kind != "remi":
        sigs = [(score.time_signatures[0].numerator, score.time_signatures[0].denominator)]
    return "{}/{}".format(*sigs[-1]) if sigs else "4/4"


def _prompt_ids(
    tokenizer, prompt: str | os.PathLike | None
) -> tuple[list[int], symusic.Score | None]:
    """Prompt ids without the final EOS (``[BOS]`` alone without a prompt) and the prompt score."""
    if prompt is None:
        return [tokenizer.bos_id], None
    from aurl.data.midi_io import load_score

    score, report = load_score(prompt)
    if report:
        log.info("%s: repaired on load: %s", prompt, report)
    ids = list(tokenizer.encode(score))
    while ids and ids[-1] == tokenizer.eos_id:
        ids.pop()
    return ids, score


def _score_programs(score: symusic.Score | None) -> set[int]:
    """Programs of the pitched tracks of a prompt (they may go on playing)."""
    if score is None:
        return set()
    return {int(t.program) for t in score.tracks if not t.is_drum and len(t.notes)}


def _tempo(score: symusic.Score | None, corpus_bpm: float = 0.0) -> float:
    """The prompt's first tempo, else the corpus's median (``sample.bpm``), else DEFAULT_BPM."""
    if score is not None and len(score.tempos):
        return float(score.tempos[0].qpm)
    return corpus_bpm or DEFAULT_BPM


def _with_tempo(score: symusic.Score, bpm: float) -> symusic.Score:
    score = score.copy()
    score.tempos = [symusic.Tempo(0, bpm)]
    return score


@dataclass
class Plan:
    """What one ``generate`` request resolves to before any decoding: the prompt, the length
    rule, the sampling filters and the settings that reproduce it. :func:`generate` and the HTTP
    server (``aurl.serving``) both build it here, so a seed gives the same piece from either."""

    tokenizer: object
    vocab: C.Vocab
    prompt_ids: list[int]
    bpm: float
    time_signature: str
    end_beats: float | None
    max_new: int
    filters: dict[str, float]
    settings: dict
    constraint_options: dict

    @property
    def rule(self) -> StopRule:
        return StopRule(self.tokenizer.eos_id, self.max_new, self.end_beats)

    def new_constraints(self) -> C.ConstraintSet:
        """A fresh constraint set (grammar + what was asked); call ``start`` on it per batch."""
        return build_constraints(self.vocab, **self.constraint_options)

    def piece(self, new: list[int]) -> tuple[list[int], symusic.Score]:
        """The full, closed token sequence of one row's new tokens and its score (tempo, meter)."""
        ids = C.finish(self.prompt_ids + list(new), self.vocab)
        score = _with_tempo(self.tokenizer.decode(ids), self.bpm)
        # the tokens carry no meter: write the one the bars were counted in
        if not self.vocab.timesig:
            num_, den_ = self.time_signature.split("/")
            score.time_signatures = [symusic.TimeSignature(0, int(num_), int(den_))]
        return ids, score


def plan_generation(
    bundle,
    *,
    num: int = 1,
    bars: int | None = None,
    seconds: float | None = None,
    tokens: int | None = None,
    prompt: str | os.PathLike | None = None,
    key: str | None = None,
    pitch_range: tuple[int, int] | None = None,
    max_polyphony: int | None = None,
    density: float | None = None,
    soft: bool = False,
    time_signature: str | None = None,
    beam: int = 1,
    batch_size: int = 4,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.95,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    programs: Sequence[int] | None = None,
) -> Plan:
    """Resolve :func:`generate`'s options (prompt, meter, length, filters) into a :class:`Plan`.

    Every option is checked first (:func:`aurl.generation.options.check_options`). What the
    request leaves open comes from the corpus the model learned (``bundle.config.sample``,
    measured at training): the note-length cap, the voice limit (``max_polyphony=0`` lifts it) and
    the programs (the corpus's dominant ones plus the prompt's; ``programs`` replaces them)."""
    check_options(
        num=num, batch_size=batch_size, bars=bars, seconds=seconds, tokens=tokens, prompt=prompt,
        key=key, pitch_range=pitch_range, max_polyphony=max_polyphony, density=density,
        time_signature=time_signature, programs=programs, beam=beam, seed=seed,
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty,
    )  # fmt: skip
    tok = bundle.tokenizer
    vocab = C.Vocab.from_tokenizer(tok)
    prompt_ids, prompt_score = _prompt_ids(tok, prompt)
    corpus = bundle.config.sample
    max_note_beats = corpus.max_note_beats or FALLBACK_NOTE_BEATS
    release_after_beats = corpus.release_after_beats or None
    if max_polyphony is None:
        max_polyphony = corpus.max_polyphony or None
    if programs is None and corpus.programs:
        programs = tuple(sorted({*corpus.programs, *_score_programs(prompt_score)}))
    programs = tuple(programs) if programs else None
    if programs and vocab.has("Program"):
        state = C.replay(prompt_ids, vocab)
        if state.program not in programs and state.phase in ("start", "event"):
            # open in an allowed instrument: with change-only Program tokens the model would
            # otherwise start in program 0, and a rarely seen Program token may never be drawn
            prompt_ids = [*prompt_ids, int(np.flatnonzero(vocab.program == programs[0])[0])]
    bpm = _tempo(prompt_score, bundle.config.sample.bpm)
    # one meter throughout, so --bars counts real bars: the prompt's (else 4/4) unless asked
    time_signature = time_signature or prompt_signature(prompt_ids, vocab, prompt_score)
    start = C.replay(
        prompt_ids, vocab, C.SeqState(bar_len=C.TimeSignature(vocab, time_signature).bar_len)
    )
    bar_len = start.bar_len
    origin = (
        math.ceil(start.time / bar_len - C.TIME_EPS) * bar_len
    )  # new music starts on a bar line
    end_beats = None
    if bars is not None:
        end_beats = origin + bars * bar_len
    elif seconds is not None:
        end_beats = start.time + seconds_to_beats(seconds, bpm)
    if end_beats is not None:
        max_new = int((end_beats - start.time) * TOKENS_PER_BEAT_CAP) + 64
    else:
        max_new = tokens or bundle.config.sample.max_new_tokens
    filters = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
    }
    settings = {
        "num": num,
        "bars": bars,
        "seconds": seconds,
        "tokens": tokens,
        "prompt": str(prompt) if prompt else None,
        "key": key,
        "pitch_range": list(pitch_range) if pitch_range else None,
        "max_polyphony": max_polyphony,
        "density": density,
        "soft": soft,
        "time_signature": time_signature,
        "programs": list(programs) if programs else None,
        "max_note_beats": max_note_beats,
        "release_after_beats": release_after_beats,
        "beam": beam,
        "batch_size": batch_size,
        "seed": seed,
        **filters,
        "bpm": bpm,
        "end_beats": end_beats,
        "max_new_tokens": max_new,
    }
    constraint_options = {
        "key": key,
        "pitch_range": pitch_range,
        "max_polyphony": max_polyphony,
        "density": density,
        "soft": soft,
        "end_beats": end_beats,
        "time_signature": time_signature,
        "programs": programs,
        "max_note_beats": max_note_beats,
        "release_after_beats": release_after_beats,
    }
    return Plan(
        tok, vocab, prompt_ids, bpm, time_signature, end_beats, max_new, filters, settings,
        constraint_options,
    )  # fmt: skip


def generate(
    bundle,
    *,
    out: str | os.PathLike,
    num: int = 4,
    beam: int = 1,
    batch_size: int = 4,
    seed: int = 0,
    wav: bool = True,
    musicxml: bool = True,
    png: bool = True,
    use_cache: bool = True,
    **options,
) -> Summary:
    """Generate ``num`` pieces into ``out`` (``piece_XX.*`` + ``samples.json``).

    ``options`` are :func:`plan_generation`'s (length, prompt, constraints, sampling filters),
    named after ``aurl generate``'s flags; they are checked and resolved there, once."""
    if beam > 1 and num > 1:
        log.warning(
            "beam search is deterministic: all %d pieces will be the same; use --num 1", num
        )
    tok, model = bundle.tokenizer, bundle.model
    plan = plan_generation(bundle, num=num, beam=beam, batch_size=batch_size, seed=seed, **options)
    vocab, prompt_ids, bpm, end_beats = plan.vocab, plan.prompt_ids, plan.bpm, plan.end_beats
    max_new, filters, settings = plan.max_new, plan.filters, plan.settings
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    on_step = steps_bar(
        max_new * math.ceil(num / batch_size) if beam == 1 else max_new * num, "generate"
    )
    done_steps = 0
    rule = plan.rule
    t0 = time.perf_counter()
    rows: list[list[int]] = []
    for first in range(0, num, batch_size if beam == 1 else 1):
        n = min(batch_size, num - first) if beam == 1 else 1
        cons = plan.new_constraints()
        base = done_steps

        def step(k: int, base: int = base) -> None:
            on_step(base + k)

        if beam > 1:
            best, _ = beam_search(
                model, prompt_ids, beams=beam, rule=rule, constraints=cons, on_step=step
            )
            rows.append(best)
        else:
            seeds = [seed + first + i for i in range(n)]
            rows.extend(
                sample(
                    model,
                    prompt_ids,
                    num=n,
                    rule=rule,
                    filters=filters,
                    constraints=cons,
                    seeds=seeds,
                    use_cache=use_cache,
                    on_step=step,
                )
            )
        done_steps += max_new
    on_step(on_step.total)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - t0
    summary = Summary(
        out,
        str(getattr(bundle, "path", "")),
        elapsed_s=elapsed,
        tokens_per_s=sum(map(len, rows)) / max(elapsed, 1e-9),
    )
    for i, new in enumerate(rows):
        ids, score = plan.piece(new)
        files = export_piece(score, out / f"piece_{i:02d}", wav=wav, musicxml=musicxml, png=png)
        beats = C.replay(ids, vocab).time
        piece = Piece(i, seed + i, len(new), tok.count_notes(ids), beats, beats * 60.0 / bpm, files)
        piece.reproduce = _reproduce_command(bundle, settings, out, seed + i)
        summary.pieces.append(piece)
        if end_beats is not None and beats < end_beats - C.TIME_EPS:
            log.warning(
                "piece_%02d reached %.1f of %.1f beats within %d tokens",
                i,
                beats,
                end_beats,
                max_new,
            )
    write_samples_json(out, summary, settings)
    return summary


def _reproduce_command(bundle, settings: dict, out: Path, seed: int) -> str:
    flags = [
        f"aurl generate --model {getattr(bundle, 'path', '?')} --out {out}/repro --num 1 --seed {seed}"
    ]
    for name in (
        "bars",
        "seconds",
        "tokens",
        "prompt",
        "key",
        "time_signature",
        "max_polyphony",
        "density",
        "beam",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
    ):
        value = settings.get(name)
        if value is not None and not (name == "beam" and value == 1):
            flags.append(f"--{name.replace('_', '-')} {value}")
    if settings.get("programs"):
        flags.append("--programs " + ",".join(map(str, settings["programs"])))
    if settings.get("pitch_range"):
        flags.append("--pitch-range {}-{}".format(*settings["pitch_range"]))
    if settings.get("soft"):
        flags.append("--soft")
    return " ".join(flags)


def write_samples_json(out: Path, summary: Summary, settings: dict) -> None:
    blob = {
        "command": summary.command,
        "model": summary.model,
        "settings": settings,
        "elapsed_s": round(summary.elapsed_s, 3),
        "tokens_per_s": round(summary.tokens_per_s, 1),
        "pieces": [asdict(p) for p in summary.pieces],
    }
    atomic_write_text(out / "samples.json", json.dumps(blob, indent=2) + "\n")


def _filters_from_args(args: argparse.Namespace) -> dict:
    return {
        "seed": args.seed,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "wav": not args.no_wav,
    }


def generate_from_args(args: argparse.Namespace) -> Summary:
    """``aurl generate`` flags -> :func:`generate` (options checked before the model loads)."""
    options = {
        "num": args.num,
        "bars": args.bars,
        "seconds": args.seconds,
        "tokens": args.tokens,
        "prompt": args.prompt,
        "key": args.key,
        "pitch_range": parse_range(args.pitch_range, "--pitch-range") if args.pitch_range else None,
        "max_polyphony": args.max_polyphony,
        "density": args.density,
        "time_signature": getattr(args, "time_signature", None),
        "programs": parse_programs(args.programs) if getattr(args, "programs", None) else None,
        "beam": args.beam,
        "batch_size": args.batch_size,
        **_filters_from_args(args),
    }
    if getattr(args, "only_midi", False):  # evaluation runs: MusicXML via music21 dominates
        options.update(wav=False, musicxml=False, png=False)
    check_options(**{k: v for k, v in options.items() if k not in ("wav", "musicxml", "png")})
    return generate(load_model(args.model), out=args.out, soft=args.soft, **options)


def infill_from_args(args: argparse.Namespace) -> Summary:
    """``aurl infill`` flags -> :func:`aurl.generation.infill.infill`."""
    from aurl.generation.infill import infill

    bundle = load_model(args.model)
    return infill(
        bundle,
        args.input,
        bars=parse_range(args.bars, "--bars"),
        out=args.out,
        **_filters_from_args(args),
    )
