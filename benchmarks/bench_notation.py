"""Notation input (issue 14): `aurl prepare` on 109 notation files from music21's corpus, and the
partitura reader against the music21 reader on 20 of them.

Run:
  .venv/bin/python benchmarks/bench_notation.py build  [--dir DIR]
  .venv/bin/python benchmarks/bench_notation.py prepare --label after [--src SRC] [--limit-s 600]
  .venv/bin/python benchmarks/bench_notation.py compare [--n 20]
  .venv/bin/python benchmarks/bench_notation.py prepare --input music21:palestrina --label palestrina

build    copies the issue's folder: every file under music21's corpus folders beethoven, mozart,
         haydn, monteverdi, chopin, handel, corelli, schoenberg, webern, verdi and joplin except
         RomanText analyses (.rntxt): 102 .mxl, 5 .krn, 1 .xml, 1 .musx (with music21 10.5.1).
prepare  runs `aurl prepare DIR --workers 2` as a subprocess (with ``--src`` another checkout's
         ``src``, e.g. a `git worktree` of the commit before this issue) under a wall-clock cap;
         when the cap stops it, counts the files the committed part files hold. Results go to
         benchmarks/results/notation.json under the label, with os.getloadavg() before and after.
compare  loads 20 fixed files (COMPARE) through both readers, partitura and music21 (each
         ``midi_io.load_score(path, reader=...)``, in this process, timed) and compares per file,
         after quantizing to the tokenizer's grid (8 steps per quarter), the multisets of
         (onset, duration, pitch); lists the first differing notes of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "notation.json"
DEFAULT_DIR = Path("/tmp/aurl_notation109")
COMPOSERS = (
    "beethoven",
    "mozart",
    "haydn",
    "monteverdi",
    "chopin",
    "handel",
    "corelli",
    "schoenberg",
    "webern",
    "verdi",
    "joplin",
)


def corpus_files() -> list[Path]:
    import music21

    root = Path(music21.__file__).parent / "corpus"
    files = [
        p
        for c in COMPOSERS
        for p in sorted((root / c).rglob("*"))
        if p.is_file() and p.suffix.lower() != ".rntxt" and not p.name.startswith(".")
    ]
    return files


def build(folder: Path) -> dict:
    import music21

    root = Path(music21.__file__).parent / "corpus"
    if folder.exists():
        shutil.rmtree(folder)
    files = corpus_files()
    for src in files:
        dst = folder / src.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    counts = Counter(p.suffix.lower() for p in files)
    return {"files": len(files), "by_suffix": dict(sorted(counts.items())), "dir": str(folder)}


def _load_results() -> dict:
    try:
        return json.loads(RESULTS.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save(key: str, value) -> None:
    results = _load_results()
    results[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))


def _count_parts(out: Path) -> dict:
    """Files the committed part files hold (what a stopped run had finished)."""
    import numpy as np

    ok = failed = 0
    for part in out.glob(".parts-*/part-*.npz"):
        with np.load(part) as z:
            metas = json.loads(z["meta"].tobytes())
        ok += sum(m["ok"] for m in metas)
        failed += sum(not m["ok"] for m in metas)
    return {"files_ok_in_parts": ok, "files_failed_in_parts": failed}


def run_prepare(folder: Path | str, label: str, src: Path | None, limit_s: float, extra: list[str]):
    out = Path(f"/tmp/aurl_notation_out_{label}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "aurl.cli", "prepare", str(folder), "--out", str(out)]
    cmd += ["--workers", "2", *extra]
    print("$", ("PYTHONPATH=" + str(src) + " ") if src else "", " ".join(cmd), flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    log_out, log_err = (tempfile.TemporaryFile() for _ in range(2))  # noqa: SIM115 (closed below)
    proc = psutil.Popen(cmd, env=env, stdout=log_out, stderr=log_err, start_new_session=True)
    cpu: dict[int, float] = {}  # pid -> user+system seconds: CPU time does not depend on load
    stopped = False
    while proc.poll() is None:
        try:
            for q in [proc, *proc.children(recursive=True)]:
                t = q.cpu_times()
                cpu[q.pid] = t.user + t.system
        except psutil.Error:
            pass
        if time.perf_counter() - started > limit_s:
            os.killpg(proc.pid, 9)  # the whole process group: the CLI and its pool workers
            proc.wait()
            stopped = True
            break
        time.sleep(0.5)
    wall = time.perf_counter() - started
    log_out.seek(0)
    log_err.seek(0)
    stdout, stderr = log_out.read(), log_err.read()
    log_out.close()
    log_err.close()
    row = {
        "command": " ".join(cmd),
        "pythonpath": str(src) if src else None,
        "wall_s": round(wall, 1),
        "cpu_s_tree_sampled": round(sum(cpu.values()), 1),
        "stopped_at_cap": stopped,
        "cap_s": limit_s,
        "returncode": proc.returncode,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "stdout": stdout.decode(errors="replace")[-4000:],
        "stderr_tail": stderr.decode(errors="replace")[-1500:],
    }
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        row.update(
            files_total=m["files_total"],
            files_ok=m["files_ok"],
            files_failed=m["files_failed"],
            files_ignored=m.get("files_ignored", []),
            slowest=m.get("slowest", []),
            notes=sum(s["notes"] for s in m["splits"].values()),
        )
    else:
        row.update(_count_parts(out))
    _save(f"prepare_{label}", row)
    print(json.dumps({k: v for k, v in row.items() if k not in ("stdout",)}, indent=1))
    print(row["stdout"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--input", help="prepare this instead of --dir (e.g. music21:palestrina)")
    p.add_argument("--label", required=True)
    p.add_argument("--src", type=Path, help="PYTHONPATH for another checkout's src")
    p.add_argument("--limit-s", type=float, default=600.0)
    p.add_argument("extra", nargs="*", help="more `aurl prepare` options (after --)")
    c = sub.add_parser("compare")
    c.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    c.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    print("$", " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    if args.what == "build":
        info = build(args.dir)
        _save("folder", info)
        print(json.dumps(info, indent=1))
    elif args.what == "prepare" and args.input:
        run_prepare(args.input, args.label, args.src, args.limit_s, args.extra)
    elif args.what == "prepare":
        if not args.dir.is_dir():
            build(args.dir)
        run_prepare(args.dir, args.label, args.src, args.limit_s, args.extra)
    else:
        compare_readers(args.dir, args.n)


# 20 files across every composer and format of the folder, small and large, in a fixed list so
# the comparison is repeatable (the Beethoven quartets cost music21 10-45 s each: two of them)
COMPARE = (
    "beethoven/opus18no1/movement3.krn",
    "beethoven/opus18no1/movement3.mxl",
    "beethoven/opus59no3/movement3.mxl",
    "chopin/mazurka06-2.krn",
    "corelli/opus3no1/1grave.xml",
    "handel/rinaldo/Lascia_chio_pianga.mxl",
    "haydn/opus74no1/movement3.mxl",
    "joplin/maple_leaf_rag.mxl",
    "monteverdi/madrigal.3.1.mxl",
    "monteverdi/madrigal.3.12.mxl",
    "monteverdi/madrigal.4.3.mxl",
    "monteverdi/madrigal.5.5.mxl",
    "mozart/k155/movement2.mxl",
    "mozart/k156/movement3.mxl",
    "mozart/k80/movement1.mxl",
    "mozart/k458/movement3.mxl",
    "schoenberg/opus19/movement2.mxl",
    "schoenberg/opus19/movement6.mxl",
    "verdi/laDonnaEMobile.mxl",
    "webern/webern_dormi_jesu_op_16_no_2.mxl",
)
GRID = 8  # steps per quarter: the tokenizer's 32nd-note grid (docs/data_format.md)


def _grid_notes(score) -> Counter:
    step = score.tpq / GRID
    return Counter(
        (round(n.time / step), round(n.duration / step), n.pitch)
        for t in score.tracks
        for n in t.notes
    )


def _classify(only_a: Counter, only_b: Counter) -> dict:
    """Differing notes by kind: same onset and pitch but another duration (ties: who is longer),
    and notes whose onset+pitch only one reader has (re-attacks of unmerged ties, repeats)."""
    onset_a = Counter((t, p) for (t, _, p), c in only_a.items() for _ in range(c))
    onset_b = Counter((t, p) for (t, _, p), c in only_b.items() for _ in range(c))
    both = onset_a & onset_b
    longer_a = longer_b = 0
    for t, p in both.elements():
        da = max(d for (tt, d, pp) in only_a if (tt, pp) == (t, p))
        db = max(d for (tt, d, pp) in only_b if (tt, pp) == (t, p))
        longer_a += da > db
        longer_b += db > da
    return {
        "duration_differs": sum(both.values()),
        "longer_in_partitura": longer_a,
        "longer_in_music21": longer_b,
        "onset_only_partitura": sum((onset_a - onset_b).values()),
        "onset_only_music21": sum((onset_b - onset_a).values()),
    }


def compare_readers(folder: Path, n: int) -> None:
    from aurl.data import midi_io

    names = [c for c in COMPARE if (folder / c).is_file()]
    missing = [c for c in COMPARE if c not in names]
    if missing:  # a file list that does not match this music21 version: take others, say so
        extra = [p.relative_to(folder).as_posix() for p in midi_io.find_music_files(folder)]
        names += [e for e in extra if e not in names][: len(missing)]
        print("not in this corpus (replaced):", missing)
    rows = []
    load = os.getloadavg()
    for name in names[:n]:
        path = folder / name
        row: dict = {"path": name}
        scores = {}
        for reader in ("partitura", "music21"):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                scores[reader] = midi_io.load_score(path, reader=reader)[0]
                row[f"{reader}_s"] = round(time.perf_counter() - t0, 2)
                row[f"{reader}_cpu_s"] = round(time.process_time() - c0, 2)
            except midi_io.MidiLoadError as err:
                row[f"{reader}_error"] = err.reason
        if len(scores) == 2:
            a, b = scores["partitura"], scores["music21"]
            ga, gb = _grid_notes(a), _grid_notes(b)
            oa = Counter((t, p) for (t, _, p), c in ga.items() for _ in range(c))
            ob = Counter((t, p) for (t, _, p), c in gb.items() for _ in range(c))
            row.update(
                notes_partitura=a.note_num(),
                notes_music21=b.note_num(),
                equal_after_quantization=ga == gb,
                onset_pitch_matched=sum((oa & ob).values()),
                notes_matched=sum((ga & gb).values()),
                only_partitura=sorted((ga - gb).elements())[:6],
                only_music21=sorted((gb - ga).elements())[:6],
                n_only_partitura=sum((ga - gb).values()),
                n_only_music21=sum((gb - ga).values()),
                **_classify(ga - gb, gb - ga),
                end_quarters=[round(a.end() / a.tpq, 2), round(b.end() / b.tpq, 2)],
                tracks_partitura=[(t.name, t.program, t.note_num()) for t in a.tracks],
                tracks_music21=[(t.name, t.program, t.note_num()) for t in b.tracks],
                velocities_music21=sorted({n.velocity for t in b.tracks for n in t.notes})[:8],
            )
        rows.append(row)
        print(
            f"{name}: partitura {row.get('partitura_s')} s / music21 {row.get('music21_s')} s; "
            f"notes {row.get('notes_partitura')} / {row.get('notes_music21')}; "
            f"equal {row.get('equal_after_quantization')}; only p {row.get('n_only_partitura')}, "
            f"only m21 {row.get('n_only_music21')}",
            flush=True,
        )
        _save("compare", {"files": rows, "loadavg_before": [round(x, 2) for x in load]})
    both = [r for r in rows if "notes_partitura" in r]
    summary = {
        "files": len(rows),
        "compared": len(both),
        "equal_after_quantization": sum(r["equal_after_quantization"] for r in both),
        "notes_partitura": sum(r["notes_partitura"] for r in both),
        "notes_music21": sum(r["notes_music21"] for r in both),
        "notes_matched": sum(r["notes_matched"] for r in both),
        "seconds_partitura": round(sum(r.get("partitura_s", 0) for r in rows), 1),
        "seconds_music21": round(sum(r.get("music21_s", 0) for r in rows), 1),
        "cpu_seconds_partitura": round(sum(r.get("partitura_cpu_s", 0) for r in rows), 1),
        "cpu_seconds_music21": round(sum(r.get("music21_cpu_s", 0) for r in rows), 1),
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    _save("compare", {"files": rows, "summary": summary})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
