"""The report page of ``aurl evaluate --samples ... --report DIR``: ``report.png`` + ``index.html``.

One panel per feature, samples (orange) over reference (blue): for a number per piece, the two
distributions as overlaid histograms; for a histogram feature, the mean histogram of each set side
by side. Each panel's title says the feature in words, its unit and the overlap area, coloured
green (≥ 0.8: samples sit among the reference as its own pieces do), amber (0.5–0.8) or red (< 0.5), so a reader sees at
a glance where the samples differ from the corpus without reading code.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

SAMPLES_COLOR, REFERENCE_COLOR = "#e66101", "#2c7bb6"
# Colour thresholds of the overlap area: the Bach test split against its train split scores
# 0.87-0.99 on every feature, 100 random-note pieces 0.00-0.30 on the features that tell them apart
# (BENCHMARKS.md, "Evaluation suite").
GOOD, FAIR = 0.8, 0.5


def _verdict_color(oa: float) -> str:
    if not np.isfinite(oa):
        return "gray"
    return "#1a9641" if oa >= GOOD else "#d98c00" if oa >= FAIR else "#d7191c"


def _panel(ax, name, spec, fig_result, samples: np.ndarray, reference: np.ndarray) -> None:
    oa = fig_result["overlap_area"]
    label = spec.title or name.replace("_", " ")
    title = f"{label}\noverlap {oa:.2f}" if np.isfinite(oa) else label
    ax.set_title(title, fontsize=9, color=_verdict_color(oa))
    if spec.kind == "histogram":
        s = np.nanmean(samples, axis=0) if len(samples) else np.zeros(len(spec.labels))
        r = np.nanmean(reference, axis=0)
        x = np.arange(len(r))
        ax.bar(x - 0.2, r, 0.4, color=REFERENCE_COLOR, label="reference")
        ax.bar(x + 0.2, s, 0.4, color=SAMPLES_COLOR, label="samples")
        labels = spec.labels or [str(i) for i in x]
        step = max(1, len(labels) // 12)
        ax.set_xticks(x[::step], labels[::step], fontsize=7)
        ax.set_ylabel(spec.unit, fontsize=7)
    else:
        s, r = samples[np.isfinite(samples)], reference[np.isfinite(reference)]
        both = np.concatenate([s, r])
        if len(both) == 0:
            return
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        ax.hist(r, bins=bins, density=True, alpha=0.55, color=REFERENCE_COLOR, label="reference")
        ax.hist(s, bins=bins, density=True, alpha=0.55, color=SAMPLES_COLOR, label="samples")
        ax.set_xlabel(spec.unit, fontsize=7)
        ax.set_yticks([])
    ax.tick_params(labelsize=7)


def write_png(result: dict, samples, reference, specs: dict, path: Path) -> Path:
    """The panel grid as a PNG (about 150 KB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(specs)
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.6 * rows + 0.9))
    axes = np.atleast_1d(axes).ravel()
    for ax, name in zip(axes, names, strict=False):
        _panel(ax, name, specs[name], result["features"][name],
               samples.values[name], reference.values[name])  # fmt: skip
    for ax in axes[len(names) :]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=9)
    fig.suptitle(
        f"{result['num_samples']} samples ({result['samples']}) vs {result['num_reference']} "
        f"reference pieces ({result['reference']}, {result['split']})\n"
        f"mean overlap area {result['mean_overlap_area']:.3f} (1 = like the reference)   "
        f"Fréchet distance {result['frechet_distance']:.1f} (0 = same)   "
        f"panel titles: green ≥ {GOOD}, amber ≥ {FAIR}, red below",
        fontsize=10,
    )
    # fixed margins: tight_layout costs ~5 s on a busy 2-core machine for 16 panels
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=1 - 1.4 / fig.get_figheight(),
                        hspace=0.65, wspace=0.3)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=70)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fmt(value) -> str:
    if isinstance(value, list):
        return "histogram"
    return f"{value:.3g}" if isinstance(value, float) and np.isfinite(value) else str(value)


def _time_base(base: str, unit: str) -> str:
    """ " (in beats)" where the time base is not already the unit."""
    return "" if base == "none" or base in unit else f" (in {base})"


def write_report(result: dict, samples, reference, specs: dict, out_dir: Path) -> Path:
    """Write ``out_dir/report.png`` and ``out_dir/index.html``; returns the HTML path."""
    from aurl.atomic import atomic_write_text

    out_dir = Path(out_dir)
    write_png(result, samples, reference, specs, out_dir / "report.png")
    rows = []
    for name, fig in sorted(result["features"].items(), key=lambda kv: kv[1]["overlap_area"]):
        oa = fig["overlap_area"]
        rows.append(
            f"<tr><td>{html.escape(specs[name].title or name)}<br><small><code>{html.escape(name)}"
            f"</code></small></td><td>{html.escape(fig['description'])}</td>"
            f"<td>{html.escape(fig['unit'])}{_time_base(fig['time_base'], fig['unit'])}</td>"
            f"<td style='color:{_verdict_color(oa)}'><b>{_fmt(oa)}</b></td><td>{_fmt(fig['kl'])}</td>"
            f"<td>{_fmt(fig['samples_mean'])}</td><td>{_fmt(fig['reference_mean'])}</td></tr>"
        )
    skipped = "".join(
        f"<li>{html.escape(s['path'])}: {html.escape(s['reason'])}</li>" for s in result["skipped"]
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Aurl evaluation</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
td,th{{padding:2px 8px;text-align:left}} tr:nth-child(even){{background:#f3f3f3}}</style></head>
<body><h1>How close are the samples to the reference?</h1>
<p>{result["num_samples"]} pieces from <code>{html.escape(result["samples"])}</code> against
{result["num_reference"]} pieces of the <b>{html.escape(result["split"])}</b> split of
<code>{html.escape(result["reference"])}</code>.</p>
<p><b>Mean overlap area {result["mean_overlap_area"]:.3f}</b> — for each feature, how much the
samples' distances to the reference pieces overlap the reference pieces' distances to each other
(1: the samples are as close to the corpus as its own pieces are; 0: nothing in common).
Fréchet distance over all features {result["frechet_distance"]:.2f} (0 = same mean and spread).
Features are sorted worst first.</p>
<img src="report.png" alt="per-feature distributions" style="width:100%">
<table><tr><th>feature</th><th>what it measures</th><th>unit</th><th>overlap</th><th>KL</th>
<th>samples mean</th><th>reference mean</th></tr>{"".join(rows)}</table>
{"<h2>Skipped files</h2><ul>" + skipped + "</ul>" if skipped else ""}
</body></html>
"""
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path
