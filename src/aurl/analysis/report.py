"""One picture per analysed file: piano roll with the melody highlighted, chords under it, key bands
and section boxes above it, beats as faint lines; the piece is cut into rows of ``ROW_S`` seconds
like systems of a score so that labels stay readable for long songs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import symusic

from aurl.analysis.notes import score_notes

ROW_S = 30.0  # seconds of music per row
SECTION_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
)


def _bands(
    ax, items: list[dict], y: float, h: float, t0: float, t1: float, colour_of, fontsize: int
) -> None:
    from matplotlib.patches import Rectangle

    for it in items:
        a, b = max(it["start"], t0), min(it["end"], t1)
        if b <= a:
            continue
        ax.add_patch(
            Rectangle(
                (a, y), b - a, h, facecolor=colour_of(it["label"]), edgecolor="white", linewidth=0.8
            )
        )
        if b - a > 0.9:
            ax.text(
                (a + b) / 2,
                y + h / 2,
                it["label"],
                ha="center",
                va="center",
                fontsize=fontsize,
                clip_on=True,
            )


def draw_report(score: symusic.Score, analysis: dict, out: Path) -> Path:
    """Write the picture of ``analysis`` (a dict from ``analyze_score``) for ``score`` to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    notes = score_notes(score)
    end = max(notes.end if len(notes) else 1.0, 1.0)
    rows = int(np.ceil(end / ROW_S))
    row_s = ROW_S if rows > 1 else end + 0.5  # a short piece fills its one row
    lo = int(notes.pitch.min()) - 2 if len(notes) else 48
    hi = int(notes.pitch.max()) + 2 if len(notes) else 84
    span = hi - lo
    fig, axes = plt.subplots(rows, 1, figsize=(16, 3.2 * rows), squeeze=False)
    mel = {(round(m["start"], 3), m["pitch"]) for m in analysis.get("melody", [])}
    section_letters = sorted({s["label"].upper() for s in analysis.get("sections", [])})

    def section_colour(label: str) -> str:
        c = SECTION_COLOURS[section_letters.index(label.upper()) % len(SECTION_COLOURS)]
        return c if label.isupper() else c + "80"

    def key_colour(label: str) -> str:
        return "#d9e7f5" if label.endswith("maj") else "#f5dede"

    def chord_colour(label: str) -> str:
        return "#eeeeee" if label == "N" else ("#fff2cc" if ":min" in label else "#e2f0d9")

    for r in range(rows):
        ax = axes[r, 0]
        t0, t1 = r * row_s, (r + 1) * row_s
        for b in analysis.get("beats", []):
            if t0 <= b < t1:
                ax.axvline(b, color="#dddddd", linewidth=0.5, zorder=0)
        for b in analysis.get("downbeats", []):
            if t0 <= b < t1:
                ax.axvline(b, color="#aaaaaa", linewidth=0.8, zorder=0)
        sel = np.flatnonzero((notes.offset > t0) & (notes.onset < t1))
        is_mel = np.array(
            [(round(float(notes.onset[i]), 3), int(notes.pitch[i])) in mel for i in sel], dtype=bool
        )
        for flag, colour, width, z in ((False, "#555555", 1.6, 2), (True, "#d62728", 3.0, 3)):
            idx = sel[is_mel == flag] if len(sel) else sel
            segs = [
                [(notes.onset[i], notes.pitch[i]), (notes.offset[i], notes.pitch[i])] for i in idx
            ]
            ax.add_collection(
                LineCollection(segs, colors=colour, linewidths=width, capstyle="butt", zorder=z)
            )
        # Bands: chords below the roll, sections and key above it.
        ch_y, sec_y, key_y = lo - 0.28 * span, hi + 0.02 * span, hi + 0.2 * span
        _bands(ax, analysis.get("chords", []), ch_y, 0.22 * span, t0, t1, chord_colour, 8)
        _bands(ax, analysis.get("sections", []), sec_y, 0.15 * span, t0, t1, section_colour, 10)
        _bands(ax, analysis.get("key", []), key_y, 0.12 * span, t0, t1, key_colour, 9)
        ax.set_xlim(t0, t1)
        ax.set_ylim(ch_y - 1, key_y + 0.12 * span + 1)
        ax.set_yticks([ch_y + 0.11 * span, 60, sec_y + 0.075 * span, key_y + 0.06 * span])
        ax.set_yticklabels(["chords", "C4", "sections", "key"], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0, 0].set_title(
        f"{Path(analysis.get('path', 'score')).name}: global key {analysis.get('global_key', '?')}, "
        f"{analysis.get('beats_per_bar', '?')} beats per bar ({analysis.get('beat_source', '?')}); melody in red",
        fontsize=11,
        loc="left",
    )
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    from aurl.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out
