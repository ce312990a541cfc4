"""Run directory -> inference bundle (``aurl export RUN --out DIR``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aurl.bundle import load_checkpoint_model, save_bundle

log = logging.getLogger(__name__)


def model_card(cfg, checkpoint: Path, extra: dict | None = None) -> str:
    """A short Markdown card: what the model is, where it came from, how to use it."""
    m = cfg.model
    lines = [
        f"# {cfg.name}",
        "",
        f"- mode: {m.mode}; {m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads, "
        f"context {m.max_seq_len}, attention {m.attention}, positions {m.position}",
        f"- tokenizer: {cfg.tokenizer.kind}, vocabulary {m.vocab_size}",
        f"- trained on: {cfg.data.path} (windows of {cfg.data.seq_len} tokens)",
        f"- exported from: {checkpoint}",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "Generate with `aurl generate --model THIS_DIR --out samples/`."]
    return "\n".join(lines) + "\n"


def step_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The periodic checkpoints kept by ``trainer.keep_checkpoints``, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.ckpt"))


def average_checkpoints(paths: list[Path]):
    """A bundle whose floating-point weights are the mean of the checkpoints' (Polyak averaging
    of the last K snapshots; Izmailov et al. 2018 show such averages land in flatter, better-
    generalising regions than the last iterate). Integer buffers are taken from the last one."""
    if not paths:
        raise ValueError("no checkpoints to average")
    bundles = [load_checkpoint_model(p) for p in paths]
    states = [b.model.state_dict() for b in bundles]
    mean = {}
    for name, value in states[-1].items():
        if value.is_floating_point():
            mean[name] = sum(s[name].double() for s in states).div(len(states)).to(value.dtype)
        else:
            mean[name] = value
    out = bundles[-1]
    out.model.load_state_dict(mean)
    return out


def validation_bits_per_note(
    bundle, data_dir: str | os.PathLike, split: str = "val"
) -> float | None:
    """Bits per note of ``split`` under ``bundle``'s model, or None when the data is not there."""
    from aurl.data.dataset import PreparedData
    from aurl.evaluation.likelihood import split_likelihood

    try:
        data = PreparedData(data_dir)
    except (FileNotFoundError, ValueError):
        return None
    part = data.split(split)
    if not len(part) or bundle.config.model.mode != "transformer":
        return None
    result = split_likelihood(bundle.model, part, bundle.tokenizer, bundle.config.model.max_seq_len)
    return result["bits_per_note"]


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    which: str = "best",
    weights_dtype: str = "float32",
    average: int = 0,
) -> Path:
    """Write the bundle of ``run_dir``'s ``checkpoints/{which}.ckpt`` into ``out``.

    ``which="best"`` falls back to ``last`` when the run never validated (with a warning).
    ``average=K`` instead writes the mean weights of the last K periodic checkpoints (the run
    must have kept them: ``trainer.keep_checkpoints``), and logs the validation bits per note of
    the newest of them beside the average's, so the gain (or loss) is measured, not assumed.
    """
    if average:
        return _export_average(Path(run_dir), Path(out), average, weights_dtype)
    if which not in ("best", "last"):
        raise ValueError(f"which={which!r}; choose best or last")
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / f"{which}.ckpt"
    if not ckpt.is_file() and which == "best":
        fallback = run_dir / "checkpoints" / "last.ckpt"
        if fallback.is_file():
            log.warning("%s: no best.ckpt (no validation ran); exporting last.ckpt", run_dir)
            ckpt = fallback
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"{ckpt}: checkpoint not found; is {run_dir} a run directory of `aurl train`?"
        )
    bundle = load_checkpoint_model(ckpt)
    from aurl.models import num_parameters

    extra = {"parameters": f"{num_parameters(bundle.model):,}", **fit_grid_sampler(bundle)}
    card = model_card(bundle.config, ckpt, extra)
    return save_bundle(
        out, bundle.model, bundle.config, bundle.tokenizer, card=card, weights_dtype=weights_dtype
    )


def _export_average(run_dir: Path, out: Path, k: int, weights_dtype: str) -> Path:
    kept = step_checkpoints(run_dir)
    if k < 2:
        raise ValueError(f"--average {k}: average at least 2 checkpoints")
    if len(kept) < k:
        raise ValueError(
            f"{run_dir}: --average {k} needs {k} kept checkpoints, found {len(kept)} "
            f"(train with trainer.keep_checkpoints={k} or more)"
        )
    chosen = kept[-k:]
    averaged = average_checkpoints(chosen)
    data_dir = averaged.config.data.path
    single = validation_bits_per_note(load_checkpoint_model(chosen[-1]), data_dir)
    mean = validation_bits_per_note(averaged, data_dir)
    from aurl.models import num_parameters

    extra = {
        "parameters": f"{num_parameters(averaged.model):,}",
        "averaged": ", ".join(p.name for p in chosen),
    }
    if single is not None and mean is not None:
        extra["val bits/note"] = f"{mean:.4f} averaged vs {single:.4f} for {chosen[-1].name} alone"
        log.info(
            "val bits/note: %.4f averaged over %d vs %.4f for %s", mean, k, single, chosen[-1].name
        )
    extra.update(fit_grid_sampler(averaged))
    card = model_card(averaged.config, chosen[-1], extra)
    return save_bundle(
        out, averaged.model, averaged.config, averaged.tokenizer, card=card,
        weights_dtype=weights_dtype,
    )  # fmt: skip


def fit_grid_sampler(bundle) -> dict[str, str]:
    """A grid VAE's sampling distribution, fitted to the posterior means of its training split
    (``GridVAE.fit_sampler``); the model card's line about it. Other models: nothing to do. Without
    the prepared data the bundle samples from the prior, with a warning."""
    from aurl.models.grid_vae import GridVAE

    if not isinstance(bundle.model, GridVAE):
        return {}
    from aurl.data.dataset import PreparedData
    from aurl.training.grid_data import posterior_means

    data = bundle.config.data.path
    try:
        prepared = PreparedData(data)
    except (OSError, ValueError) as exc:
        log.warning("%s: %s; `aurl sample` with this bundle draws from the prior", data, exc)
        return {"sampler": "the prior (no training data at export)"}
    bundle.model.fit_sampler(posterior_means(bundle.model, prepared, "train"))
    n = int(bundle.model.sampler["segments"])
    log.info("sampler fitted to the posterior means of %d training segments", n)
    return {"sampler": f"Gaussian fitted to the posterior means of {n:,} training segments"}
