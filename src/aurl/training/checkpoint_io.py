"""Checkpoints written atomically and read back without unpickling arbitrary objects.

Lightning's own ``TorchCheckpointIO`` serializes to memory and then writes straight to the final
name, so a crash (SIGKILL, full disk) mid-write leaves a truncated ``last.ckpt`` that the next
``--resume`` cannot read. Here every write goes to a temporary file in the same directory, is
fsynced, and only then ``os.replace``-d over the final name (atomic on POSIX).

Reading uses ``torch.load(weights_only=True)``: only tensors, numbers, strings, lists, tuples and
dicts are accepted, so a checkpoint downloaded from elsewhere cannot run code. To keep that possible
the run stores its config as a plain dict, never a dataclass or a ``Path``; ``check_plain`` verifies
it before anything is written, so a non-plain object fails at save time with the key that holds it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from aurl.atomic import atomic_path

log = logging.getLogger(__name__)

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


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO: plain-type check + atomic write; ``weights_only`` read."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise ValueError(
                f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}"
            )
        check_plain(checkpoint)
        atomic_torch_save(checkpoint, path)
        log.debug("checkpoint written: %s", path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_plain(path, map_location=map_location if map_location is not None else "cpu")
