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
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from aurl.atomic import atomic_path
from aurl.plain import check_plain, load_plain

log = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "check_plain", "load_plain"]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


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
