"""Check every generation option before any work starts, with a one-line error naming the flag.

``aurl generate --bars -2`` used to end in ``RuntimeError: Trying to create tensor with negative
dimension`` after the model had loaded; now :func:`check_options` says ``--bars -2 must be an
integer from 1 to 2000`` first. The names are the CLI flags' (``top_p`` is ``--top-p``), which are also
the HTTP API's field names, so one message serves both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from aurl.generation.constraints import parse_key

MAX_BARS = 2000
MAX_SECONDS = 3600.0
"""Longest request: an hour of music (about 50,000 tokens of a chorale); beyond that the token
buffer alone would take gigabytes."""
MAX_TOKENS = 200_000
MAX_NUM = 10_000


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int_in(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{_flag(name)} {value!r} must be an integer from {low} to {high}")


def _float_in(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high  # type: ignore[operator]
    if not ok:
        bound = "(" if low_open else "["
        raise ValueError(f"{_flag(name)} {value!r} must be a number in {bound}{low:g}, {high:g}]")


def check_options(
    *,
    num: int = 1,
    batch_size: int = 1,
    bars: int | None = None,
    seconds: float | None = None,
    tokens: int | None = None,
    prompt: str | os.PathLike | None = None,
    key: str | None = None,
    pitch_range: tuple[int, int] | None = None,
    max_polyphony: int | None = None,
    density: float | None = None,
    time_signature: str | None = None,
    programs: Sequence[int] | None = None,
    beam: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.95,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
) -> None:
    """Raise ``ValueError`` naming the first option out of range; return None when all are fine."""
    _int_in("num", num, 1, MAX_NUM)
    _int_in("batch_size", batch_size, 1, 1024)
    if sum(x is not None for x in (bars, seconds, tokens)) > 1:
        raise ValueError("give at most one of --bars, --seconds, --tokens")
    if bars is not None:
        _int_in("bars", bars, 1, MAX_BARS)
    if seconds is not None:
        _float_in("seconds", seconds, 0.0, MAX_SECONDS, low_open=True)
    if tokens is not None:
        _int_in("tokens", tokens, 1, MAX_TOKENS)
    if prompt is not None and not Path(prompt).is_file():
        raise ValueError(f"--prompt {prompt}: no such file")
    if key is not None:
        parse_key(key)  # raises with the accepted forms
    if pitch_range is not None:
        lo, hi = pitch_range
        if not (0 <= lo <= hi <= 127):
            raise ValueError(f"--pitch-range {lo}-{hi} must satisfy 0 <= LOW <= HIGH <= 127")
    if max_polyphony is not None:
        _int_in("max_polyphony", max_polyphony, 0, 128)
    if density is not None:
        _float_in("density", density, 0.0, 64.0, low_open=True)
    if time_signature is not None:
        num_, _, den = time_signature.partition("/")
        if not (
            num_.isdigit() and den.isdigit() and int(num_) >= 1 and int(den) in (1, 2, 4, 8, 16)
        ):
            raise ValueError(f"--time-signature {time_signature!r} must look like 3/4 or 6/8")
    if programs is not None:
        if not programs:
            raise ValueError("--programs must name at least one General MIDI program (0-127)")
        for p in programs:
            _int_in("programs", p, 0, 127)
    _int_in("beam", beam, 1, 64)
    _int_in("seed", seed, 0, 2**63 - 1)
    _float_in("temperature", temperature, 0.0, 100.0, low_open=True)
    _int_in("top_k", top_k, 0, 1_000_000)
    _float_in("top_p", top_p, 0.0, 1.0, low_open=True)
    _float_in("min_p", min_p, 0.0, 1.0)
    _float_in("repetition_penalty", repetition_penalty, 0.0, 100.0, low_open=True)


def parse_programs(text: str) -> tuple[int, ...]:
    """``"0,24"`` -> (0, 24), with the flag named in the error."""
    try:
        programs = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(
            f"--programs {text!r} must be General MIDI programs like 0 or 0,24"
        ) from None
    if not programs:
        raise ValueError(f"--programs {text!r} must name at least one program")
    return programs


__all__ = ["MAX_BARS", "MAX_SECONDS", "check_options", "parse_programs"]
