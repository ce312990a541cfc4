"""Run an exported ONNX model (``aurl export --format onnx``) with onnxruntime behind the
MusicTransformer interface, so ``generation.sample``, ``evaluation.likelihood`` and ``aurl serve``
use it unchanged.

Shape letters as in ``aurl.deploy.onnx_export``. :class:`OnnxCache` mirrors ``KVCache`` (``length``,
``offset``, ``position``, ``drop_oldest``, ``reorder``) but keeps keys/values in numpy buffers of a
capacity that doubles when full (64, 128, ... up to ``max_len``): the decode graph reads the whole
buffer under a mask, so the buffer is passed without a copy and attention covers at most twice the
valid length; each step writes only the new slot.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aurl.deploy.onnx_export import DECODE_FILE, PREFILL_FILE
from aurl.models.transformer import PAD_ID, ModelOutput

FIRST_CAPACITY = 64


class OnnxCache:
    """Keys/values (L, B, H, S_cap, D) float32 in numpy; one length for all rows (as KVCache)."""

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int) -> None:  # fmt: skip
        if batch_size <= 0 or max_len <= 0:
            raise ValueError(f"OnnxCache needs batch_size > 0 and max_len > 0, got {batch_size}, {max_len}")  # fmt: skip
        self.shape = (n_layers, batch_size, n_heads, head_dim)
        self.max_len = max_len
        cap = min(FIRST_CAPACITY, max_len)
        self.keys = np.zeros((n_layers, batch_size, n_heads, cap, head_dim), np.float32)
        self.values = np.zeros_like(self.keys)
        self.length = 0
        self.offset = 0

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def position(self) -> int:
        return self.offset + self.length

    def check_room(self, length: int) -> None:
        if self.length + length > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} + {length} positions exceed max_len={self.max_len}; "
                "call cache.drop_oldest(n) first"
            )

    def _grow(self, need: int) -> None:
        cap = self.keys.shape[3]
        if need <= cap:
            return
        new = min(self.max_len, max(need, 2 * cap))
        L, B, H, D = self.shape[0], self.batch_size, self.shape[2], self.shape[3]
        keys = np.zeros((L, B, H, new, D), np.float32)
        values = np.zeros_like(keys)
        keys[:, :, :, : self.length] = self.keys[:, :, :, : self.length]
        values[:, :, :, : self.length] = self.values[:, :, :, : self.length]
        self.keys, self.values = keys, values

    def write(self, k: np.ndarray, v: np.ndarray) -> None:
        """Append k, v (L, B, H, T, D) after the valid slots."""
        T = k.shape[3]
        self._grow(self.length + T)
        self.keys[:, :, :, self.length : self.length + T] = k
        self.values[:, :, :, self.length : self.length + T] = v
        self.length += T

    def mask(self) -> np.ndarray:
        """(B, S_cap) bool: True for valid slots."""
        m = np.zeros((self.batch_size, self.keys.shape[3]), dtype=bool)
        m[:, : self.length] = True
        return m

    def drop_oldest(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ValueError(f"drop_oldest(n={n}) needs 0 <= n <= cached length {self.length}")
        keep = self.length - n
        self.keys[:, :, :, :keep] = self.keys[:, :, :, n : self.length].copy()
        self.values[:, :, :, :keep] = self.values[:, :, :, n : self.length].copy()
        self.length, self.offset = keep, self.offset + n

    def reorder(self, indices: torch.Tensor) -> None:
        idx = np.asarray(indices.cpu())
        self.keys, self.values = self.keys[:, idx].copy(), self.values[:, idx].copy()


class _Param:
    """What ``next(model.parameters())`` gives callers that ask for a device and dtype."""

    device = torch.device("cpu")
    dtype = torch.float32


class OnnxLM:
    """``prefill.onnx`` + ``decode.onnx`` behind ``MusicTransformer.forward``'s contract."""

    def __init__(self, directory: str | os.PathLike, cfg, threads: int = 1) -> None:
        import onnxruntime as ort

        directory = Path(directory)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.prefill = ort.InferenceSession(
            str(directory / PREFILL_FILE), opts, providers=providers
        )
        self.decode = ort.InferenceSession(str(directory / DECODE_FILE), opts, providers=providers)
        self.cfg = cfg
        self.path = directory
        self.training = False

    # the bits of nn.Module that callers touch
    def eval(self) -> OnnxLM:
        return self

    def parameters(self):
        return iter([_Param()])

    def to(self, *args, **kwargs) -> OnnxLM:
        return self

    def new_cache(self, batch_size: int, max_len: int | None = None, **_: object) -> OnnxCache:
        c = self.cfg
        return OnnxCache(c.n_layers, batch_size, c.n_heads, max_len or c.max_seq_len, c.d_model // c.n_heads)  # fmt: skip

    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, *, cache: OnnxCache | None = None,
                 prefix=None, key_mask=None, logits_for: str = "all") -> ModelOutput:  # fmt: skip
        """As :meth:`MusicTransformer.forward` (no prefix or padding mask: plain LM use)."""
        if prefix is not None or key_mask is not None:
            raise ValueError("ONNX models take no prefix or key_mask (export covers the plain LM)")
        ids = np.ascontiguousarray(tokens.cpu().numpy().astype(np.int64))
        B, T = ids.shape
        if cache is None or cache.length == 0:
            if cache is not None:
                cache.check_room(T)
            logits, k, v = self.prefill.run(None, {"tokens": ids})  # (B, T, V), (L, B, H, T, D)
            if cache is not None:
                cache.write(k, v)
        else:
            rows = []
            for t in range(T):  # one decode step per token (generation feeds one at a time)
                cache.check_room(1)
                positions = np.full(B, cache.position, dtype=np.int64)
                logits, k, v = self.decode.run(None, {
                    "tokens": ids[:, t : t + 1], "positions": positions, "past_keys": cache.keys,
                    "past_values": cache.values, "mask": cache.mask(),
                })  # fmt: skip
                cache.write(k, v)
                rows.append(logits[:, None])
            logits = np.concatenate(rows, axis=1)  # (B, T, V)
        out = torch.from_numpy(logits)
        if logits_for == "last":
            out = out[:, -1:]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                out.reshape(B * T, -1), targets.reshape(B * T), ignore_index=PAD_ID
            )
        return ModelOutput(logits=out if logits_for != "none" else None, loss=loss, hidden=torch.empty(0), cache=cache)  # fmt: skip

    forward = __call__


def is_onnx_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / DECODE_FILE).is_file() and (Path(path) / PREFILL_FILE).is_file()


class OnnxRowCache:
    """Per-row cache for continuous batching with the decode graph (as ``models.cache.RowCache``).

    Buffers (L, B_max, H, S_cap, D) hold every row; a step passes them whole (no copy) with a
    (B_max, S_cap) mask, so free rows cost compute but never a copy of the cache.
    """

    def __init__(self, cfg, rows: int, max_len: int) -> None:
        self.shape = (cfg.n_layers, rows, cfg.n_heads, cfg.d_model // cfg.n_heads)
        self.max_len = max_len
        L, B, H, D = self.shape
        self.keys = np.zeros((L, B, H, min(FIRST_CAPACITY, max_len), D), np.float32)
        self.values = np.zeros_like(self.keys)
        self.lengths = [0] * rows
        self.offsets = [0] * rows

    @property
    def rows(self) -> int:
        return self.shape[1]

    def position(self, row: int) -> int:
        return self.offsets[row] + self.lengths[row]

    def _grow(self, need: int) -> None:
        cap = self.keys.shape[3]
        if need <= cap:
            return
        new = min(self.max_len, max(need, 2 * cap))
        L, B, H, D = self.shape
        keys = np.zeros((L, B, H, new, D), np.float32)
        values = np.zeros_like(keys)
        keys[:, :, :, :cap], values[:, :, :, :cap] = self.keys, self.values
        self.keys, self.values = keys, values

    def load(self, row: int, cache: OnnxCache) -> None:
        n = cache.length
        self._grow(n + 1)
        self.keys[:, row, :, :n] = cache.keys[:, 0, :, :n]
        self.values[:, row, :, :n] = cache.values[:, 0, :, :n]
        self.lengths[row], self.offsets[row] = n, cache.offset

    def move(self, src: int, dst: int) -> None:
        n = self.lengths[src]
        self.keys[:, dst, :, :n] = self.keys[:, src, :, :n]
        self.values[:, dst, :, :n] = self.values[:, src, :, :n]
        self.lengths[dst], self.offsets[dst] = n, self.offsets[src]

    def clear(self, row: int) -> None:
        self.lengths[row], self.offsets[row] = 0, 0

    def drop_oldest(self, row: int, n: int) -> None:
        length = self.lengths[row]
        if not 0 <= n <= length:
            raise ValueError(f"drop_oldest(n={n}) needs 0 <= n <= cached length {length}")
        keep = length - n
        self.keys[:, row, :, :keep] = self.keys[:, row, :, n:length].copy()
        self.values[:, row, :, :keep] = self.values[:, row, :, n:length].copy()
        self.lengths[row], self.offsets[row] = keep, self.offsets[row] + n


def onnx_row_step(model: OnnxLM, tokens: torch.Tensor, cache: OnnxRowCache) -> torch.Tensor:
    """One token for each of the first n rows (tokens (n,)); logits (n, V) (as ``row_step``)."""
    n = tokens.shape[0]
    lens = cache.lengths[:n]
    if any(x >= cache.max_len for x in lens):
        raise ValueError(f"a row of the cache is full ({cache.max_len} slots); drop_oldest first")
    cache._grow(max(lens) + 1)
    B, cap = cache.rows, cache.keys.shape[3]
    ids = np.zeros((B, 1), np.int64)
    ids[:n, 0] = tokens.numpy()
    positions = np.array([cache.position(r) for r in range(B)], np.int64)
    mask = np.arange(cap)[None, :] < np.array(cache.lengths)[:, None]  # (B, S_cap)
    mask[n:] = False
    logits, k, v = model.decode.run(None, {
        "tokens": ids, "positions": positions, "past_keys": cache.keys,
        "past_values": cache.values, "mask": mask,
    })  # fmt: skip
    for r in range(n):
        cache.keys[:, r, :, lens[r]] = k[:, r, :, 0]
        cache.values[:, r, :, lens[r]] = v[:, r, :, 0]
        cache.lengths[r] += 1
    return torch.from_numpy(logits[:n])
