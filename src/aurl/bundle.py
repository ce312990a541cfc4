"""An exported model directory: ``model.safetensors`` + ``config.yaml`` + ``tokenizer.json`` (+ card).

Nothing here unpickles: weights are safetensors, the config is YAML parsed into the typed dataclasses,
the tokenizer is JSON. ``load_bundle`` also accepts a training run directory: it uses the run's
``model/`` export when present, else builds the model from ``checkpoints/best.ckpt`` (or
``last.ckpt``) read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from aurl.atomic import atomic_path
from aurl.config import RunConfig, atomic_write_text, from_dict, load_config, save_config

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CONFIG_FILE = "config.yaml"
CARD_FILE = "MODEL_CARD.md"
SAMPLER_FILE = "sampler.safetensors"  # a grid VAE's fitted sampling distribution (optional)
TOKENIZER_FILE = "tokenizer.json"
ONNX_DECODE_FILE = "decode.onnx"
"""Marks an ONNX export (``aurl export --format onnx``): loaded with onnxruntime, not torch."""
CHECKPOINTS = ("best.ckpt", "last.ckpt")
MODEL_PREFIX = "model."
"""The LightningModules hold the network as ``self.model``; checkpoint keys carry this prefix."""


@dataclass
class Bundle:
    """A loaded model ready for inference (``model`` is in eval mode)."""

    model: nn.Module
    tokenizer: object
    """An :class:`aurl.data.tokenizers.MusicTokenizer`."""
    config: RunConfig
    path: Path
    """Where it was loaded from (bundle dir or checkpoint file)."""


def _build(cfg: RunConfig) -> nn.Module:
    if cfg.model.mode in ("vae", "vae_gan"):
        from aurl.models.vae import build_vae

        return build_vae(cfg.model)
    from aurl.models import build_model

    return build_model(cfg.model)


def save_bundle(
    dir: str | os.PathLike,
    model: nn.Module,
    cfg: RunConfig,
    tokenizer,
    card: str | None = None,
    weights_dtype: str = "float32",
) -> Path:
    """Write the bundle files into ``dir`` (each atomically) and return ``dir``.

    ``cfg.model.vocab_size`` is set from the tokenizer so the bundle rebuilds without data.
    ``weights_dtype`` (float32, float16 or bfloat16) is the storage type only: loading casts the
    weights back into the fp32 model, so float16 halves the file for a measured, tiny loss
    (see models/bach_small/MODEL_CARD.md).
    """
    if weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(
            f"weights_dtype={weights_dtype!r}; choose one of {', '.join(WEIGHT_DTYPES)}"
        )
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model.vocab_size not in (0, tokenizer.vocab_size):
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} but the tokenizer has {tokenizer.vocab_size} ids"
        )
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
    )
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        # save_model drops the duplicate name of a shared (tied) tensor and load_model restores it.
        stored = (
            model
            if weights_dtype == "float32"
            else copy.deepcopy(model).to(WEIGHT_DTYPES[weights_dtype])
        )
        save_model(stored, str(tmp))
    sampler = getattr(model, "sampler", None)
    if sampler:
        with atomic_path(out / SAMPLER_FILE) as tmp:
            save_file({k: v.contiguous() for k, v in sampler.items()}, str(tmp))
    else:
        (out / SAMPLER_FILE).unlink(missing_ok=True)  # not a stale one from an earlier export
    save_config(cfg, out / CONFIG_FILE)
    tokenizer.save(out)
    if card is not None:
        atomic_write_text(out / CARD_FILE, card)
    log.info("bundle written: %s", out)
    return out


def _load_tokenizer(directory: Path):
    from aurl.data.tokenizers import MusicTokenizer

    return MusicTokenizer.load(directory)


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle directory, an ONNX export, or a run directory (its ``model/`` export or
    best/last checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model or run directory")
    if (path / ONNX_DECODE_FILE).is_file():
        return _load_onnx(path)
    if (path / WEIGHTS_FILE).is_file():
        return _load_dir(path, device)
    if (path / "model" / WEIGHTS_FILE).is_file():
        return _load_dir(path / "model", device)
    for name in CHECKPOINTS:
        ckpt = path / "checkpoints" / name
        if ckpt.is_file():
            return load_checkpoint_model(ckpt, device)
    raise FileNotFoundError(
        f"{path}: neither a bundle ({WEIGHTS_FILE}) nor a run directory with model/ or "
        f"checkpoints/{{{','.join(CHECKPOINTS)}}}; train with `aurl train` or export with `aurl export`"
    )


def _load_onnx(directory: Path) -> Bundle:
    """An ``aurl export --format onnx`` directory, run by onnxruntime (``aurl.deploy``)."""
    from aurl.deploy.onnx_model import OnnxLM

    cfg = load_config(directory / CONFIG_FILE)
    tokenizer = _load_tokenizer(directory)
    return Bundle(
        model=OnnxLM(directory, cfg.model), tokenizer=tokenizer, config=cfg, path=directory
    )


def _load_dir(directory: Path, device: str | torch.device) -> Bundle:
    cfg = load_config(directory / CONFIG_FILE)
    tokenizer = _load_tokenizer(directory)
    if cfg.model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"{directory}: config says model.vocab_size={cfg.model.vocab_size} but tokenizer.json has "
            f"{tokenizer.vocab_size} ids; the bundle is inconsistent, re-export it"
        )
    model = _build(cfg)
    try:
        missing, unexpected = load_model(
            model, directory / WEIGHTS_FILE, strict=False, device=str(device)
        )
    except RuntimeError as exc:  # shape mismatches
        first = next((ln.strip() for ln in str(exc).splitlines()[1:2]), str(exc))
        raise ValueError(
            f"{directory / WEIGHTS_FILE}: weights do not fit {directory / CONFIG_FILE} ({first})"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_FILE}: weights do not fit the config "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    if (directory / SAMPLER_FILE).is_file() and hasattr(model, "sampler"):
        model.sampler = load_file(str(directory / SAMPLER_FILE))
    model.to(device).eval()
    return Bundle(model=model, tokenizer=tokenizer, config=cfg, path=directory)


def model_state_from_checkpoint(checkpoint: dict, source: Path) -> dict[str, torch.Tensor]:
    """The network's state dict from a Lightning checkpoint (``model.`` prefix stripped)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{source}: no state_dict in this checkpoint")
    return {k[len(MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}


def load_checkpoint_model(ckpt: Path, device: str | torch.device = "cpu") -> Bundle:
    """Build the model of a run from one of its checkpoints (``weights_only=True``)."""
    from aurl.plain import load_plain

    checkpoint = load_plain(ckpt, map_location="cpu")
    raw_cfg = checkpoint.get("aurl_config")
    if not isinstance(raw_cfg, dict):
        raise ValueError(
            f"{ckpt}: no aurl_config in this checkpoint; was it written by `aurl train`?"
        )
    cfg = from_dict(RunConfig, raw_cfg)
    run_dir = ckpt.parent.parent
    tokenizer = _load_tokenizer(run_dir)
    model = _build(cfg)
    state = model_state_from_checkpoint(checkpoint, ckpt)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{ckpt}: weights do not fit its aurl_config ({exc})") from None
    # A tied output weight may be stored under one name only; anything else missing is an error.
    missing = [k for k in missing if not _is_tied_alias(model, k)]
    if missing or unexpected:
        raise ValueError(
            f"{ckpt}: weights do not fit the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.to(device).eval()
    return Bundle(model=model, tokenizer=tokenizer, config=cfg, path=ckpt)


def _is_tied_alias(model: nn.Module, name: str) -> bool:
    """True when parameter ``name`` shares its storage with another parameter of ``model``."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    return p is not None and any(q is p and n != name for n, q in params.items())
