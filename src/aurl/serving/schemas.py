"""Request bodies of the HTTP API: pydantic models whose fields are ``aurl generate``'s options.

Every range is checked before any work (FastAPI answers 422 naming the field); unknown fields are
refused too, so a typo (``temprature``) is an error rather than a silently ignored option. The
limits are sizes a CPU server can afford per request; ``ServeConfig`` bounds the token budget.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aurl.generation.constraints import parse_key

MAX_BARS = 64
"""Bars per request: 64 bars of a chorale is ~4,600 tokens (~18 per beat), ~1 min on one core."""
MAX_SECONDS = 240.0
MAX_TOKENS = 4096
MAX_PROMPT_BASE64 = 2_000_000
"""Characters of base64 (1.5 MB of MIDI): the loader's corrupt corpus and real prompts are KBs."""


class Sampling(BaseModel):
    """Sampling filters and the seed (``aurl generate --temperature ... --seed``)."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="same seed, same piece; omitted: random"
    )
    temperature: float = Field(1.0, gt=0.0, le=5.0)
    top_k: int = Field(0, ge=0, le=100_000, description="0 = off")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=5.0)


class GenerateRequest(Sampling):
    """``POST /v1/generate``: the options of ``aurl generate`` for one piece."""

    bars: int | None = Field(None, ge=1, le=MAX_BARS)
    seconds: float | None = Field(None, gt=0.0, le=MAX_SECONDS)
    tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    key: str | None = Field(None, max_length=16, description="e.g. D:min or F#:maj")
    pitch_range: str | None = Field(
        None, max_length=16, description="LOW-HIGH MIDI pitches, e.g. 36-84"
    )
    max_polyphony: int | None = Field(None, ge=1, le=16)
    density: float | None = Field(None, gt=0.0, le=32.0, description="notes per beat (soft)")
    soft: bool = False
    time_signature: str | None = Field(None, pattern=r"^\d{1,2}/\d{1,2}$")
    programs: list[int] | None = Field(
        None, max_length=16, description="General MIDI programs allowed (0-127)"
    )
    prompt: str | None = Field(
        None, max_length=MAX_PROMPT_BASE64, description="a MIDI file, base64"
    )
    musicxml: bool = Field(True, description="also return MusicXML (music21; ~0.1-1 s)")

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None:
            parse_key(v)  # ValueError -> 422 naming the field
        return v

    @field_validator("pitch_range")
    @classmethod
    def _pitch_range(cls, v: str | None) -> str | None:
        if v is not None:
            lo, sep, hi = v.partition("-")
            if (
                not sep
                or not lo.isdigit()
                or not hi.isdigit()
                or not 0 <= int(lo) <= int(hi) <= 127
            ):
                raise ValueError("must look like LOW-HIGH with 0 <= LOW <= HIGH <= 127, e.g. 36-84")
        return v

    @field_validator("programs")
    @classmethod
    def _programs(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(not 0 <= p <= 127 for p in v)):
            raise ValueError("must be a non-empty list of General MIDI programs 0-127")
        return v

    @model_validator(mode="after")
    def _one_length(self) -> GenerateRequest:
        given = [n for n in ("bars", "seconds", "tokens") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of bars, seconds, tokens (got {', '.join(given)})")
        return self


class InfillRequest(Sampling):
    """``POST /v1/infill``: regenerate bars FIRST-LAST (1-based, inclusive) of a MIDI file."""

    midi: str = Field(..., min_length=1, max_length=MAX_PROMPT_BASE64, description="base64 MIDI")
    bars: str = Field(..., max_length=16, description="FIRST-LAST, e.g. 3-4")
    musicxml: bool = True

    @field_validator("bars")
    @classmethod
    def _bars(cls, v: str) -> str:
        lo, sep, hi = v.partition("-")
        if (
            not sep
            or not lo.isdigit()
            or not hi.isdigit()
            or not 1 <= int(lo) <= int(hi) <= MAX_BARS
        ):
            raise ValueError(f"must look like FIRST-LAST with 1 <= FIRST <= LAST <= {MAX_BARS}")
        return v


class InterpolateRequest(BaseModel):
    """``POST /v1/interpolate`` (VAE models): slerp between the first segments of two files."""

    model_config = ConfigDict(extra="forbid")

    a: str = Field(..., min_length=1, max_length=MAX_PROMPT_BASE64, description="base64 MIDI")
    b: str = Field(..., min_length=1, max_length=MAX_PROMPT_BASE64, description="base64 MIDI")
    steps: int = Field(6, ge=2, le=16)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
