"""What a finished request returns: the piece as MIDI (base64), MusicXML, notes and its settings.

Decoding goes through :meth:`aurl.generation.pipeline.Plan.piece`, the same call ``aurl generate``
makes before writing ``piece_XX.mid``, so the bytes here equal the CLI's file for the same seed.
:class:`NoteTracker` turns the token stream into note events for Server-Sent Events, read from the
constraint state the sampler already keeps (no extra decoding per token).
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import symusic

from aurl.generation.constraints import ConstraintSet


def score_notes(score: symusic.Score) -> list[dict]:
    """Every note of ``score`` in seconds: ``{pitch, start, end, velocity, program}``, by onset."""
    sec = score.to("second")
    notes = [
        {
            "pitch": int(n.pitch),
            "start": round(float(n.start), 4),
            "end": round(float(n.end), 4),
            "velocity": int(n.velocity),
            "program": int(t.program),
        }
        for t in sec.tracks
        for n in t.notes
    ]
    return sorted(notes, key=lambda n: (n["start"], n["pitch"]))


def musicxml_text(score: symusic.Score) -> str:
    """MusicXML of ``score`` through the CLI's writer (music21), in a temporary folder."""
    from aurl.generation.export import write_midi, write_musicxml

    with tempfile.TemporaryDirectory(prefix="aurl-serve-") as tmp:
        midi = write_midi(score, Path(tmp) / "piece.mid")
        return write_musicxml(midi, Path(tmp) / "piece.musicxml").read_text(encoding="utf-8")


def piece_result(plan, new: list[int], *, musicxml: bool) -> dict:
    """The response body of one finished piece (``plan`` a :class:`Plan`, ``new`` its tokens)."""
    ids, score = plan.piece(new)
    out = {
        "midi": base64.b64encode(score.dumps_midi()).decode("ascii"),
        "notes": score_notes(score),
        "new_tokens": len(new),
        "note_count": plan.tokenizer.count_notes(ids),
        "bpm": plan.bpm,
    }
    if musicxml:
        try:
            out["musicxml"] = musicxml_text(score)
        except Exception as err:  # music21 fails on odd scores; the MIDI is still good
            out["musicxml_error"] = f"{type(err).__name__}: {err}"
    return out


class NoteTracker:
    """Note events of one row from its constraint state, called after each token.

    ``note``: a note began (``end`` null while a MIDILike note still sounds); ``note_off``: it
    ended. Times are seconds at the piece's tempo (beats x 60 / bpm).
    """

    def __init__(self, constraints: ConstraintSet, bpm: float) -> None:
        self.constraints, self.scale = constraints, 60.0 / bpm
        self.sounding: dict = {}
        self.started = False

    def events(self) -> list[dict]:
        """Events since the last call (the first call, right after ``start``, only primes)."""
        state = self.constraints.states[0]
        now = dict(state.sounding)
        if not self.started:  # the prompt's notes are not news
            self.sounding, self.started = now, True
            return []
        out = []
        for (program, pitch), (on, end) in now.items():
            if self.sounding.get((program, pitch)) != (on, end):
                finite = end != float("inf")
                out.append({
                    "type": "note", "pitch": pitch, "program": program,
                    "start": round(on * self.scale, 4),
                    "end": round(end * self.scale, 4) if finite else None,
                })  # fmt: skip
        for (program, pitch), (on, end) in self.sounding.items():
            if (program, pitch) not in now or now[(program, pitch)][0] != on:
                stop = end if end != float("inf") else state.time
                out.append({
                    "type": "note_off", "pitch": pitch, "program": program,
                    "start": round(on * self.scale, 4), "end": round(stop * self.scale, 4),
                })  # fmt: skip
        self.sounding = now
        if out:
            out.append({"type": "time", "seconds": round(state.time * self.scale, 4)})
        return out


# ---------------------------------------------------------------------------------------------
# decoding finished pieces beside the decode loop

_WORKER: dict = {}


def _init_worker(tokenizer_dir: str) -> None:
    """Worker process: load the tokenizer once (its vocabulary tables too)."""
    from aurl.data.tokenizers import MusicTokenizer
    from aurl.generation.constraints import Vocab

    tok = MusicTokenizer.load(tokenizer_dir)
    _WORKER["tokenizer"], _WORKER["vocab"] = tok, Vocab.from_tokenizer(tok)


def _worker_result(plan, new: list[int], musicxml: bool) -> dict:
    plan.tokenizer, plan.vocab = _WORKER["tokenizer"], _WORKER["vocab"]
    return piece_result(plan, new, musicxml=musicxml)


class PieceDecoder:
    """Turns finished token rows into response bodies, in worker processes when ``workers > 0``.

    MidiTok's MIDILike decode costs ~45 ms of pure Python per piece whatever its length (measured
    on bach_small's tokenizer; music21's MusicXML far more). In the server's process that time holds
    the GIL the decode loop needs, so at 16 concurrent clients it capped throughput; a worker
    process decodes on the other core instead. ``workers=0`` decodes in a thread (tests).
    """

    def __init__(self, tokenizer, workers: int = 1) -> None:
        self.pool = None
        self._tmp = None
        if workers > 0:
            import multiprocessing
            import tempfile
            from concurrent.futures import ProcessPoolExecutor

            self._tmp = tempfile.TemporaryDirectory(prefix="aurl-serve-tok-")
            tokenizer.save(self._tmp.name)
            self.pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self._tmp.name,),
            )  # fmt: skip

    async def result(self, plan, new: list[int], *, musicxml: bool) -> dict:
        import asyncio
        import dataclasses

        if self.pool is None:
            return await asyncio.to_thread(piece_result, plan, new, musicxml=musicxml)
        light = dataclasses.replace(plan, tokenizer=None, vocab=None)  # the worker has its own
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, _worker_result, light, list(new), musicxml)

    def warm(self) -> None:
        """Start the workers now, not on the first request."""
        if self.pool is not None:
            self.pool.submit(_WORKER.get, "tokenizer").result(timeout=120)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self._tmp is not None:
            self._tmp.cleanup()
