"""Plain checkpoints: only tensors and plain Python values, read with ``weights_only=True``.

Below both ``aurl.bundle`` (which loads a run's checkpoint) and ``aurl.training.checkpoint_io``
(which writes them), so the bundle does not import the training package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``ValueError`` naming the first value that ``torch.load(weights_only=True)`` would reject."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)):
                raise ValueError(f"{where}: key {k!r} of type {type(k).__name__} is not plain")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(
        f"{where} holds a {type(obj).__module__}.{type(obj).__name__}; only tensors and plain "
        "Python values may be checkpointed (convert it to a dict/str first)"
    )


def load_plain(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError here
        raise ValueError(
            f"{path}: cannot be loaded as a plain checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it is truncated or holds pickled objects"
        ) from exc
