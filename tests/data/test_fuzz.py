"""Fuzz the lenient loader: mutated MIDI bytes either load (and are sane) or fail with a reason.

Mutants are generated deterministically (seeded ``numpy.random.Generator``) in memory from the
real files in ``tests/data/midi``; ``benchmarks/bench_fuzz.py`` reuses :func:`mutants` for a
larger run and prints counts per outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from aurl.data.midi_io import MidiLoadError, load_score_bytes
from aurl.data.repair import repair_score

MIDI = Path(__file__).resolve().parent / "midi"
SEEDS = ("pop909_008.mid", "etude_no4.mid", "multitrack_drums.mid", "maestro_1.mid")
HUGE_DELTA = b"\xff\xff\xff\x7f"  # largest 4-byte MIDI variable-length quantity: 2**28 - 1 ticks


def _track_starts(data: bytes) -> list[int]:
    """Offsets of the ``MTrk`` chunk tags."""
    out, i = [], data.find(b"MTrk")
    while i >= 0:
        out.append(i)
        i = data.find(b"MTrk", i + 4)
    return out


def _with_inserted(
    data: bytes,
    rng: np.random.Generator,
    payload: bytes,
    at_end: bool = False,
    track: int | None = None,
) -> bytes:
    """Insert ``payload`` (delta-time + event bytes) into a random track, at the start of its
    events or just before its End-of-Track event, and fix that chunk's length. ``track`` picks
    the chunk instead of ``rng``."""
    starts = _track_starts(data)
    if not starts:
        return data + payload
    at = starts[int(rng.integers(len(starts))) if track is None else track]
    length = int.from_bytes(data[at + 4 : at + 8], "big")
    where = at + 8
    chunk_end = at + 8 + length
    # End-of-Track is FF 2F 00 after a delta time; a one-byte delta is < 0x80
    if at_end and data[chunk_end - 3 : chunk_end] == b"\xff\x2f\x00" and data[chunk_end - 4] < 0x80:
        where = chunk_end - 4
    head = data[: at + 4] + (length + len(payload)).to_bytes(4, "big") + data[at + 8 : where]
    return head + payload + data[where:]


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for i in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
        buf[i] = int(rng.integers(256))
    return bytes(buf)


def bad_chunk_length(data: bytes, rng: np.random.Generator) -> bytes:
    starts = _track_starts(data)
    if not starts:
        return data
    at = starts[int(rng.integers(len(starts)))] + 4
    value = int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, int(rng.integers(2**32))]))
    return data[:at] + value.to_bytes(4, "big") + data[at + 4 :]


def running_status(data: bytes, rng: np.random.Generator) -> bytes:
    """Data bytes with no status byte before them (running status with nothing to run on)."""
    return _with_inserted(data, rng, b"\x00" + bytes(rng.integers(0, 128, size=2).tolist()))


def _huge_delta_note(rng: np.random.Generator) -> bytes:
    pitch = int(rng.integers(128))
    return HUGE_DELTA + bytes([0x90, pitch, 100, 0x60, 0x80, pitch, 0])


def huge_delta_start(data: bytes, rng: np.random.Generator) -> bytes:
    """A note 2**28 ticks into a track: the whole track after it starts absurdly late."""
    return _with_inserted(data, rng, _huge_delta_note(rng))


def huge_delta_end(data: bytes, rng: np.random.Generator) -> bytes:
    """A stray note 2**28 ticks after a track's last event."""
    return _with_inserted(data, rng, _huge_delta_note(rng), at_end=True)


def mutate_header(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    field = int(rng.integers(4))
    if field == 0:  # chunk tag
        buf[int(rng.integers(4))] = int(rng.integers(256))
    elif field == 1:  # header length
        buf[4:8] = int(rng.integers(2**32)).to_bytes(4, "big")
    elif field == 2:  # format and track count
        buf[8:12] = bytes(rng.integers(0, 256, size=4).tolist())
    else:  # division: 0, SMPTE (negative) or random
        buf[12:14] = bytes(rng.choice([[0, 0], [0xE7, 0x28], rng.integers(0, 256, 2).tolist()]))
    return bytes(buf)


def garbage(data: bytes, rng: np.random.Generator) -> bytes:
    blob = bytes(rng.integers(0, 256, size=int(rng.integers(1, 4096))).tolist())
    return (data[:14] + blob) if rng.random() < 0.5 else blob


def empty(data: bytes, rng: np.random.Generator) -> bytes:
    return b""


MUTATORS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    f.__name__: f
    for f in (
        truncate,
        flip_bytes,
        bad_chunk_length,
        running_status,
        huge_delta_start,
        huge_delta_end,
        mutate_header,
        garbage,
        empty,
    )
}


def mutants(count: int, seed: int = 0) -> Iterator[tuple[str, str, bytes]]:
    """``count`` mutants as ``(name, mutator, bytes)``, cycling over seed files and mutators."""
    rng = np.random.default_rng(seed)
    originals = [(name, (MIDI / name).read_bytes()) for name in SEEDS]
    kinds = list(MUTATORS)
    for i in range(count):
        name, data = originals[i % len(originals)]
        kind = kinds[(i // len(originals)) % len(kinds)]
        yield f"fuzz{i:05d}-{kind}-{name}", kind, MUTATORS[kind](data, rng)


def check_one(name: str, data: bytes) -> str:
    """Load one mutant; returns ``"ok"``, ``"repaired"`` or the failure's reason category.
    Raises AssertionError when the loader breaks its contract."""
    try:
        score, report = load_score_bytes(data, name)
    except MidiLoadError as err:
        text = str(err)
        assert text.startswith(f"{name}: ") and err.reason and "\n" not in text, text
        return err.reason.split(":")[0].split(" (")[0]
    assert score.note_num() > 0
    for track in score.tracks:
        n = track.notes.numpy()
        assert (n["duration"] > 0).all() and (n["time"] >= 0).all(), name
        assert ((n["pitch"] >= 0) & (n["velocity"] >= 1)).all(), name
    assert all(10 <= t.qpm <= 400 for t in score.tempos), name
    _, second = repair_score(score)
    assert not second, f"{name}: repair is not idempotent: {second}"
    return "repaired" if report else "ok"


def test_fuzz_600_mutants_never_crash_and_always_explain():
    outcomes: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {k: Counter() for k in MUTATORS}
    made: Counter[str] = Counter()
    for name, kind, data in mutants(600, seed=0):
        outcome = check_one(name, data)
        outcomes[outcome] += 1
        by_kind[kind][outcome] += 1
        made[kind] += 1
    assert sum(outcomes.values()) == 600
    # every family of damage is exercised and lands where it should
    assert by_kind["empty"] == Counter({"empty file": made["empty"]})
    # a 2**28-tick delta loads; the repair must move the piece back or drop the stray note
    assert by_kind["huge_delta_start"]["repaired"] == made["huge_delta_start"]
    assert by_kind["huge_delta_end"]["repaired"] == made["huge_delta_end"]
    assert by_kind["truncate"]["truncated"] > 0
    assert outcomes["ok"] + outcomes["repaired"] > 0
    assert set(outcomes) - {"ok", "repaired"} <= {
        "empty file",
        "not a MIDI file",
        "truncated",
        "corrupt",
        "no notes",
        "no notes after repair",
    }


def test_huge_delta_stray_note_is_dropped_and_late_track_moved_back():
    data = (MIDI / "pop909_008.mid").read_bytes()
    clean, _ = load_score_bytes(data)
    clean_times = clean.tracks[0].notes.numpy()["time"].astype(np.int64)

    # track 0 of this file is the conductor track (tempo, meter); track 1 holds the notes
    stray_bytes = _with_inserted(
        data,
        np.random.default_rng(0),
        _huge_delta_note(np.random.default_rng(0)),
        at_end=True,
        track=1,
    )
    stray, report = load_score_bytes(stray_bytes, "end.mid")
    assert report.counts["notes_beyond_gap"] == 1
    assert stray.note_num() == clean.note_num() and stray.end() == clean.end()

    late_bytes = _with_inserted(
        data, np.random.default_rng(0), _huge_delta_note(np.random.default_rng(0)), track=1
    )
    late, report = load_score_bytes(late_bytes, "start.mid")
    assert report.counts["leading_silence_removed"] == 1
    assert "notes_beyond_gap" not in report.counts  # nothing separates the inserted note
    assert late.note_num() == clean.note_num() + 1
    times = late.tracks[0].notes.numpy()["time"].astype(np.int64)
    offset = times[1:] - clean_times  # times[0] is the inserted note, 0x60 ticks before the rest
    assert len(set(offset.tolist())) == 1  # moved as a whole, rhythm intact
    assert 0 <= offset[0] < 4 * clean.ticks_per_quarter + 0x60  # within a bar of the original
