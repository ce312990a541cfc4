"""Write a generated piece as MIDI, MusicXML, a piano-roll PNG and a WAV, each atomically.

MIDI goes through ``aurl.data.midi_io.save_score`` (the only MIDI writer). MusicXML is music21's
reading of that MIDI file (quantized, measures, key, clefs, ties) after ``makeNotation``. Audio uses
the ``fluidsynth`` program with a General MIDI SoundFont when both are installed
(``sudo apt-get install fluidsynth fluid-soundfont-gm``), else a small built-in additive synth.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import symusic

from aurl.atomic import atomic_path
from aurl.data.midi_io import save_score

log = logging.getLogger(__name__)

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)
SOUNDFONT_HINT = "sudo apt-get install fluidsynth fluid-soundfont-gm"
SAMPLE_RATE = 22050
"""22.05 kHz: ample for the additive synth's partials (< 5 kHz) and half the size of 44.1 kHz."""


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then rename tmp onto ``path`` so readers never see a partial file."""
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def write_midi(score: symusic.Score, path: str | os.PathLike) -> Path:
    save_score(score, path)
    return Path(path)


def write_musicxml(midi_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """MusicXML from a MIDI file via music21: parse (quantized), ``makeNotation``, write."""
    import music21

    score = music21.converter.parse(str(midi_path), quantizePost=True)
    _one_instrument_per_part(score)
    try:
        score = score.makeNotation()
    except (music21.exceptions21.Music21Exception, ValueError, IndexError) as err:
        # makeNotation fails on some odd tuplet/tie mixes; the parsed score is still valid MusicXML.
        log.warning("%s: makeNotation failed (%s); writing music21's parse as is", midi_path, err)

    def write(tmp: Path) -> None:
        score.write("musicxml", fp=str(tmp))

    return _atomic(Path(path), write)


def _one_instrument_per_part(score) -> None:
    """Keep each part's first instrument, at its start, and drop the others.

    music21's MIDI reader puts a second Instrument object inside the first voice of some parts
    (e.g. "Acoustic Grand Piano" at the part and "Piano" in measure 1's voice); its MusicXML writer
    then fails on later measures with "Instrument instance for note ... not found in
    instrumentStream" (all five 3-minute pieces of issue 15). A track of ours has one program, so
    one instrument per part is what the MIDI says anyway."""
    import music21

    for part in score.parts:
        found = list(part.recurse().getElementsByClass(music21.instrument.Instrument))
        for inst in found:
            inst.activeSite.remove(inst)
        if found:
            part.insert(0, found[0])


def _notes_in(score: symusic.Score, unit: str) -> list[dict[str, np.ndarray]]:
    """Per track: numpy arrays of time, duration, pitch, velocity in ``unit`` (quarter|second)."""
    s = score.to(unit)
    return [dict(t.notes.numpy(), program=t.program, drum=t.is_drum) for t in s.tracks if t.notes]


def write_pianoroll(score: symusic.Score, path: str | os.PathLike, title: str = "") -> Path:
    """Pitch x time (beats) PNG: one colour per track, alpha by velocity, grey bar lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tracks = _notes_in(score, "quarter")
    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    end = 4.0
    for i, t in enumerate(tracks):
        alpha = 0.35 + 0.65 * t["velocity"] / 127.0
        for x, w, p, a in zip(t["time"], t["duration"], t["pitch"], alpha, strict=True):
            ax.add_patch(_rect(x, p, w, colors[i % len(colors)], a))
        end = max(end, float((t["time"] + t["duration"]).max()))
    sig = score.to("quarter").time_signatures
    num, den = (sig[0].numerator, sig[0].denominator) if len(sig) else (4, 4)
    bar = num * 4.0 / den
    for x in np.arange(0.0, end + bar, bar):
        ax.axvline(x, color="0.8", lw=0.6, zorder=0)
    pitches = np.concatenate([t["pitch"] for t in tracks]) if tracks else np.array([60])
    ax.set_xlim(0, end)
    ax.set_ylim(pitches.min() - 2, pitches.max() + 3)
    ax.set_xlabel(f"beats (bars of {num}/{den})")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    fig.tight_layout()
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def _rect(x: float, y: float, w: float, color: str, alpha: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y - 0.4), max(w, 0.05), 0.8, color=color, alpha=float(alpha), lw=0)


def find_soundfont() -> str | None:
    """A General MIDI SoundFont path when the fluidsynth program and a font are installed."""
    if shutil.which("fluidsynth") is None:
        return None
    return next((f for f in SOUNDFONTS if Path(f).is_file()), None)


def synthesize(score: symusic.Score, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Built-in renderer: each note a decaying sum of 4 harmonics (a plucked/organ-like tone),
    amplitude by velocity; returns mono float32 in [-1, 1]."""
    tracks = _notes_in(score, "second")
    end = max((float((t["time"] + t["duration"]).max()) for t in tracks), default=0.0)
    out = np.zeros(int((end + 0.5) * sample_rate) + 1, dtype=np.float32)
    release = 0.05  # s, avoids clicks at note ends
    for t in tracks:
        if t["drum"]:
            continue
        for start, dur, pitch, vel in zip(
            t["time"], t["duration"], t["pitch"], t["velocity"], strict=True
        ):
            n = int((dur + release) * sample_rate)
            if n <= 0:
                continue
            ts = np.arange(n, dtype=np.float32) / sample_rate
            f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
            wave_ = sum(
                np.sin(2 * np.pi * f0 * k * ts) / k**1.5
                for k in range(1, 5)
                if f0 * k < sample_rate / 2
            )
            env = np.exp(-2.5 * ts) * np.clip(ts / 0.01, 0, 1)  # 10 ms attack, exponential decay
            env *= np.clip((dur + release - ts) / release, 0, 1)
            i = int(start * sample_rate)
            out[i : i + n] += (0.2 * vel / 127.0 * wave_ * env)[: len(out) - i]
    peak = float(np.abs(out).max()) if len(out) else 0.0
    return out / peak * 0.9 if peak > 0.9 else out


def _write_pcm(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.tobytes())


def write_wav(score: symusic.Score, midi_path: str | os.PathLike, path: str | os.PathLike) -> str:
    """Render audio; returns the renderer used (``fluidsynth:<font>`` or ``builtin``)."""
    font = find_soundfont()
    path = Path(path)
    if font is not None:

        def run(tmp: Path) -> None:
            cmd = [
                "fluidsynth",
                "-ni",
                "-q",
                "-F",
                str(tmp),
                "-r",
                str(SAMPLE_RATE),
                font,
                str(midi_path),
            ]
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)

        try:
            _atomic(path, run)
            return f"fluidsynth:{font}"
        except (subprocess.SubprocessError, OSError) as err:
            log.warning("fluidsynth failed on %s (%s); using the built-in synth", midi_path, err)
    _atomic(path, lambda tmp: _write_pcm(tmp, synthesize(score), SAMPLE_RATE))
    return "builtin"


def export_piece(
    score: symusic.Score,
    stem: str | os.PathLike,
    *,
    wav: bool = True,
    musicxml: bool = True,
    png: bool = True,
) -> dict[str, str]:
    """Write ``stem.mid`` (+ ``.musicxml``, ``.png``, ``.wav``); returns {kind: path or renderer}.
    A failing secondary format is logged and reported, never loses the MIDI."""
    stem = Path(stem)
    out = {"midi": str(write_midi(score, stem.with_suffix(".mid")))}
    jobs: list[tuple[str, Callable[[], object]]] = []
    if musicxml:
        jobs.append(
            ("musicxml", lambda: write_musicxml(out["midi"], stem.with_suffix(".musicxml")))
        )
    if png:
        jobs.append(("png", lambda: write_pianoroll(score, stem.with_suffix(".png"), stem.name)))
    if wav:
        jobs.append(("wav", lambda: write_wav(score, out["midi"], stem.with_suffix(".wav"))))
    for kind, job in jobs:
        try:
            result = job()
        except Exception as err:
            log.warning("%s: could not write %s: %s", stem, kind, err)
            out[f"{kind}_error"] = str(err)
            continue
        if kind == "wav":
            out["wav"], out["renderer"] = str(stem.with_suffix(".wav")), str(result)
        else:
            out[kind] = str(result)
    return out
