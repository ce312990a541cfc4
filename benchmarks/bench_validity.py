"""Validity of constrained generation: decodable sequences, files other readers open, notes in key.

    .venv/bin/python benchmarks/bench_validity.py                 # 1000 pieces
    .venv/bin/python benchmarks/bench_validity.py --num 100       # quicker

Model: as in bench_generate.py (the shipped bundle, else random weights of the bach_small shape;
random weights are the harder case for the grammar: nothing but the constraints keeps them valid).
Every piece is sampled with the grammar plus ``--key`` (strict), ``--max-polyphony`` and a
``--bars`` length, then checked:

- undecodable: the tokenizer raises on decode, or the decoded score does not hold exactly the notes
  the tokens start (``count_notes``), or holds a note of zero length (target 0);
- files: a sample of ``--files`` pieces written as MIDI and opened by mido, pretty_midi, music21;
- key: % of decoded notes whose pitch class is in the key's scale (target 100 %).
Results: benchmarks/results/validity.json + .md (Markdown table with the command on top).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from aurl.config import atomic_write_text
from aurl.generation import constraints as C
from aurl.generation.pipeline import build_constraints
from aurl.generation.sample import StopRule, sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import REPO, aurl_model

RESULTS = REPO / "benchmarks" / "results" / "validity.json"


def opens_everywhere(path: Path) -> dict[str, str | None]:
    import mido
    import music21
    import pretty_midi

    errors: dict[str, str | None] = {}
    for name, fn in (("mido", mido.MidiFile), ("pretty_midi", pretty_midi.PrettyMIDI),
                     ("music21", music21.converter.parse)):  # fmt: skip
        try:
            fn(str(path))
            errors[name] = None
        except Exception as err:
            errors[name] = f"{type(err).__name__}: {err}"[:200]
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "bach_small")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--bars", type=int, default=4)
    ap.add_argument("--key", default="D:min")
    ap.add_argument("--max-polyphony", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument(
        "--files", type=int, default=30, help="pieces whose MIDI file is opened by each reader"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, desc, _ = aurl_model(args.model)
    vocab = C.Vocab.from_tokenizer(tok)
    end = args.bars * 4.0
    scale = set(C.parse_key(args.key))
    undecodable, notes_total, notes_in_key, tokens = [], 0, 0, 0
    file_failures: list[dict] = []
    t0 = time.perf_counter()
    from aurl.data.midi_io import save_score

    with tempfile.TemporaryDirectory() as tmp:
        for first in range(0, args.num, args.batch_size):
            n = min(args.batch_size, args.num - first)
            cons = build_constraints(
                vocab, key=args.key, max_polyphony=args.max_polyphony, end_beats=end
            )
            rule = StopRule(tok.eos_id, int(end * 64) + 64, end)
            rows = sample(model, [tok.bos_id], num=n, rule=rule, filters={"top_p": 0.95}, constraints=cons,
                          seeds=range(first, first + n), threads=None)  # fmt: skip
            for i, new in enumerate(rows, start=first):
                ids = C.finish([tok.bos_id, *new], vocab)
                tokens += len(new)
                try:
                    score = tok.decode(ids)
                except Exception as err:
                    undecodable.append({"piece": i, "reason": f"decode raised {err!r}"[:200]})
                    continue
                notes = [nt for t in score.tracks for nt in t.notes]
                if len(notes) != tok.count_notes(ids) or any(nt.duration <= 0 for nt in notes):
                    undecodable.append(
                        {
                            "piece": i,
                            "reason": f"{len(notes)} notes decoded of {tok.count_notes(ids)}",
                        }
                    )
                notes_total += len(notes)
                notes_in_key += sum(nt.pitch % 12 in scale for nt in notes)
                if i < args.files:
                    path = Path(tmp) / f"piece_{i:04d}.mid"
                    save_score(score, path)
                    errs = {k: v for k, v in opens_everywhere(path).items() if v}
                    if errs:
                        file_failures.append({"piece": i, **errs})
            print(f"{first + n}/{args.num} pieces, {len(undecodable)} undecodable", file=sys.stderr)
    dt = time.perf_counter() - t0
    r = {
        "command": "python " + " ".join(sys.argv), "model": desc, "load_avg": round(os.getloadavg()[0], 2),
        "pieces": args.num, "bars": args.bars, "key": args.key, "max_polyphony": args.max_polyphony,
        "tokens": tokens, "seconds": round(dt, 1), "undecodable": len(undecodable),
        "undecodable_examples": undecodable[:10], "files_checked": min(args.files, args.num),
        "file_failures": file_failures, "notes": notes_total,
        "pct_notes_in_key": round(100.0 * notes_in_key / max(notes_total, 1), 3),
    }  # fmt: skip
    atomic_write_text(args.out, json.dumps(r, indent=1) + "\n")
    table = "\n".join([
        f"`{r['command']}`", "", f"model: {desc}; load average at start {r['load_avg']}", "",
        "| pieces | tokens | undecodable | files checked (mido, pretty_midi, music21) | files failing | notes | % notes in key | time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {args.num} | {tokens} | {len(undecodable)} | {r['files_checked']} | {len(file_failures)} | {notes_total} "
        f"| {r['pct_notes_in_key']} | {r['seconds']} s |",
    ])  # fmt: skip
    atomic_write_text(args.out.with_suffix(".md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
