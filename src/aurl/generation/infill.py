"""``aurl infill``: regenerate some bars of a piece in context (``infill(bundle, path, bars=...)``).

The model reads left to right, so the new bars are conditioned on everything *before* them; the bars
after are kept as they were at their original time, and the length constraint (``EndAt``) makes the
generated bars end exactly where they start.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import symusic

from aurl.generation import constraints as C
from aurl.generation.export import export_piece
from aurl.generation.pipeline import (
    TOKENS_PER_BEAT_CAP,
    Piece,
    Summary,
    _tempo,
    write_samples_json,
)
from aurl.generation.sample import StopRule, sample, steps_bar


def _time_shifts(vocab: C.Vocab, beats: float) -> list[int]:
    """TimeShift ids that add up to ``beats`` (greedy, largest first; the grid divides any gap)."""
    out: list[int] = []
    shifts = sorted(
        ((vocab.beats[i], i) for i in range(vocab.size) if vocab.types[i] == "TimeShift"),
        reverse=True,
    )
    left = beats
    for value, i in shifts:
        while left >= value - C.TIME_EPS:
            out.append(int(i))
            left -= value
    return out


def infill(
    bundle,
    input: str | os.PathLike,
    *,
    bars: tuple[int, int],
    out: str | os.PathLike,
    num: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.95,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    wav: bool = True,
    musicxml: bool = True,
    png: bool = True,
) -> Summary:
    """Regenerate bars ``bars[0]..bars[1]`` (1-based, inclusive) of ``input`` in context.

    The model reads left to right, so the new bars are conditioned on everything *before* them
    (notes sounding into the first bar are cut there); the bars after are kept as they were, at
    their original time, and the generated bars end exactly at their start (length constraint).
    """
    from aurl.data.midi_io import load_score

    first, last = bars
    if first < 1:
        raise ValueError(f"--bars {first}-{last}: bars are numbered from 1")
    tok, model = bundle.tokenizer, bundle.model
    vocab = C.Vocab.from_tokenizer(tok)
    score, _ = load_score(input)
    q = score.to("quarter")
    sig = q.time_signatures
    num_, den = (sig[0].numerator, sig[0].denominator) if len(sig) else (4, 4)
    bar_q = num_ * 4.0 / den
    start_q, end_q = (first - 1) * bar_q, last * bar_q
    if start_q >= q.end():
        raise ValueError(
            f"{input}: --bars {first}-{last} starts after the piece ends (bar {int(q.end() // bar_q) + 1})"
        )
    before = q.copy()
    for t in before.tracks:
        t.notes = [_clip(n, start_q) for n in t.notes if n.time < start_q]
    prompt = [tok.bos_id]
    if before.note_num():
        prompt = [i for i in tok.encode(before.to("tick")) if i != tok.eos_id]
    to_beats = den / 4.0  # tokenizer beats are the time-signature denominator (FACTS.md)
    start_b, end_b = start_q * to_beats, end_q * to_beats
    if vocab.kind != "remi":
        prompt += _time_shifts(vocab, start_b - C.replay(prompt, vocab).time)
    filters = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
    }
    max_new = int((end_b - start_b) * TOKENS_PER_BEAT_CAP) + 64
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chosen: list = [C.EndAt(vocab, end_b)]
    programs = {t.program for t in q.tracks if not t.is_drum and t.notes}
    if programs and vocab.has("Program"):  # the new bars use the piece's own instruments
        chosen.append(C.Programs(vocab, sorted(programs)))
    cons = C.ConstraintSet(vocab, chosen)
    rows = sample(
        model,
        prompt,
        num=num,
        rule=StopRule(tok.eos_id, max_new, end_b),
        filters=filters,
        constraints=cons,
        seeds=[seed + i for i in range(num)],
        on_step=steps_bar(max_new, "infill"),
    )
    elapsed = time.perf_counter() - t0
    summary = Summary(
        out,
        str(getattr(bundle, "path", "")),
        elapsed_s=elapsed,
        tokens_per_s=sum(map(len, rows)) / max(elapsed, 1e-9),
        command="infill",
    )
    settings = {
        "input": str(input),
        "bars": [first, last],
        "seed": seed,
        **filters,
        "start_beats": start_b,
        "end_beats": end_b,
        "conditioned_on": f"bars 1-{first - 1} (left context only)",
    }
    for i, new in enumerate(rows):
        gen = tok.decode(C.finish(prompt + new, vocab)).to("quarter")
        merged = q.copy()
        for t in merged.tracks:
            t.notes = [_clip(n, start_q) for n in t.notes if n.time < start_q] + [
                n for n in t.notes if n.time >= end_q - 1e-9
            ]
        added = 0
        for g in gen.tracks:
            notes = [_clip(n, end_q) for n in g.notes if start_q - 1e-9 <= n.time < end_q]
            target = next(
                (t for t in merged.tracks if t.program == g.program and t.is_drum == g.is_drum),
                None,
            )
            if target is None:
                target = symusic.Track(g.name, g.program, g.is_drum, ttype="quarter")
                merged.tracks.append(target)
            target.notes = sorted([*target.notes, *notes], key=lambda n: (n.time, n.pitch))
            added += len(notes)
        result = merged.to("tick")
        files = export_piece(result, out / f"piece_{i:02d}", wav=wav, musicxml=musicxml, png=png)
        summary.pieces.append(
            Piece(
                i,
                seed + i,
                len(new),
                added,
                end_b - start_b,
                (end_q - start_q) * 60.0 / _tempo(score),
                files,
                reproduce=f"aurl infill {input} --bars {first}-{last} --model {getattr(bundle, 'path', '?')} --seed {seed + i} --out {out}/repro",
            )
        )
    write_samples_json(out, summary, settings)
    return summary


def _clip(note, end: float):
    """The note, ended at ``end`` beats (quarters) if it sounds past it."""
    if note.time + note.duration <= end:
        return note
    return symusic.Note(
        note.time, max(end - note.time, 0.0), note.pitch, note.velocity, ttype="quarter"
    )
