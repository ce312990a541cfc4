"""Reading prepared data: ``PreparedData`` (memmap reader), training windows and evaluation windows.

- :class:`PreparedData` opens a directory written by ``aurl prepare`` (docs/data_format.md).
- :class:`WindowDataset` is map-style: ``ds[i]`` is a pure function of ``(seed, i)``, so a resumed
  run that draws window ``global_step * batch_size + b`` sees exactly the data it would have seen.
  The window length follows the curriculum of step ``i // batch_size``; all windows of one step
  share it, so they stack into a batch.
- :func:`eval_windows` cuts every piece of a split into consecutive windows so that every token
  after BOS is a prediction target exactly once (held-out likelihood).

Shapes: B batch, L window length in tokens (a window holds L + 1 tokens: inputs and shifted targets).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aurl.data.tokenizers import TOKEN_TYPES, MusicTokenizer

log = logging.getLogger(__name__)

PAD_ID = 0
SPLIT_NAMES = ("train", "val", "test")


class SplitData:
    """One split of a prepared directory; shards are memory-mapped lazily (per process)."""

    def __init__(self, root: Path, name: str, dtype: str, names: list[str]):
        self.root, self.name, self.dtype = root, name, np.dtype(dtype)
        index_path = root / f"{name}.index.npy"
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{index_path}: missing; the prepared directory is incomplete, rerun aurl prepare"
            )
        self.index = np.load(index_path).reshape(-1, 4)  # (N, 4): shard, offset, length, notes
        self.names = names
        if len(self.names) != len(self.index):
            raise ValueError(
                f"{root}: pieces.json lists {len(names)} {name} pieces, the index {len(self.index)}"
            )
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self) -> dict:  # a pickled np.memmap would copy the whole file into the pickle
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per piece, (N,)."""
        return self.index[:, 2]

    @property
    def num_tokens(self) -> int:
        return int(self.index[:, 2].sum())

    @property
    def num_notes(self) -> int:
        return int(self.index[:, 3].sum())

    def _shard(self, k: int) -> np.memmap:
        if k not in self._maps:
            self._maps[k] = np.memmap(
                self.root / "tokens" / f"{self.name}-{k:05d}.bin", dtype=self.dtype, mode="r"
            )
        return self._maps[k]

    def piece(self, i: int) -> np.ndarray:
        """Token ids of piece ``i`` (int64 copy, ``BOS ... EOS``)."""
        if not 0 <= i < len(self):
            raise IndexError(f"piece {i} out of range for {self.name} split of {len(self)} pieces")
        shard, offset, length, _ = (int(x) for x in self.index[i])
        return np.asarray(self._shard(shard)[offset : offset + length], dtype=np.int64)


class PreparedData:
    """Reader of a prepared directory: ``.manifest``, ``.tokenizer``, ``.split(name)``."""

    def __init__(self, directory: str | Path):
        self.root = Path(directory)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; run `aurl prepare INPUT --out {self.root}` first"
            )
        self.manifest: dict = json.loads(path.read_text())
        self._names = json.loads((self.root / "pieces.json").read_text())
        self._tokenizer: MusicTokenizer | None = None
        self._splits: dict[str, SplitData] = {}

    @property
    def tokenizer(self) -> MusicTokenizer:
        if self._tokenizer is None:
            self._tokenizer = MusicTokenizer.load(self.root)
        return self._tokenizer

    def split(self, name: str) -> SplitData:
        if name not in SPLIT_NAMES:
            raise ValueError(f"split {name!r} is not one of {', '.join(SPLIT_NAMES)}")
        if name not in self._splits:
            self._splits[name] = SplitData(
                self.root, name, self.manifest["dtype"], self._names[name]
            )
        return self._splits[name]


# ---------------------------------------------------------------------------------------------
# training windows


def linear_curriculum(start: int, end: int, steps: int, multiple: int = 8) -> Callable[[int], int]:
    """Window length growing linearly from ``start`` to ``end`` over ``steps`` (rounded down to
    ``multiple``; constant ``end`` when ``start`` or ``steps`` is 0)."""
    if start <= 0 or steps <= 0:
        return lambda step: end

    def length(step: int) -> int:
        frac = min(max(step, 0) / steps, 1.0)
        n = int(start + frac * (end - start))
        return max(min(end, n - n % multiple), min(start, end), 1)

    return length


@dataclass(frozen=True)
class Augment:
    """Per-sample augmentation on token ids: transposition (±semitones) and velocity shift (±bins)."""

    transpose: int = 0
    velocity_bins: int = 0


class WindowDataset(Dataset):
    """Random windows of ``length(step) + 1`` tokens; ``ds[i]`` is a pure function of (seed, i)."""

    def __init__(
        self,
        split: SplitData,
        seq_len: int,
        *,
        tokenizer: MusicTokenizer | None = None,
        seed: int = 0,
        batch_size: int = 1,
        curriculum: Callable[[int], int] | None = None,
        start_prob: float = 0.25,
        augment: Augment = Augment(),
        size: int = 1 << 31,
    ):
        if len(split) == 0:
            raise ValueError(
                f"the {split.name} split of {split.root} has no pieces; prepare more files"
            )
        self.split, self.seq_len, self.seed, self.batch_size = split, seq_len, seed, batch_size
        self.curriculum = curriculum or (lambda step: seq_len)
        self.start_prob, self.augment, self.size = start_prob, augment, size
        self._cum = np.cumsum(split.lengths)
        self._tables: dict[int, np.ndarray] = {}
        self._velocity_ids = np.zeros(0, dtype=np.int64)
        if (augment.transpose or augment.velocity_bins) and tokenizer is None:
            raise ValueError(
                "augmentation needs the tokenizer (pass tokenizer=PreparedData(...).tokenizer)"
            )
        if (
            tokenizer is not None
            and tokenizer.is_trained
            and (augment.transpose or augment.velocity_bins)
        ):
            log.warning("BPE tokens bake in pitches and velocities: id-level augmentation is off")
            self.augment = Augment()
        elif tokenizer is not None:
            for s in range(-augment.transpose, augment.transpose + 1):
                self._tables[s] = tokenizer.transpose_table(s)
            types = tokenizer.token_type(np.arange(tokenizer.vocab_size))
            self._velocity_ids = np.flatnonzero(types == TOKEN_TYPES.index("velocity"))

    def __len__(self) -> int:
        return self.size

    def window_length(self, index: int) -> int:
        return int(self.curriculum(index // self.batch_size))

    def __getitem__(self, index: int) -> torch.Tensor:
        """(L + 1,) int64 tokens, PAD-filled after EOS when the piece is shorter than the window."""
        rng = np.random.default_rng([self.seed, index])
        n = self.window_length(index) + 1
        # pieces by length, so every token is equally likely to be in a window
        p = int(np.searchsorted(self._cum, rng.integers(self._cum[-1]), side="right"))
        piece = self.split.piece(p)
        start = (
            0 if rng.random() < self.start_prob else int(rng.integers(max(1, len(piece) - n + 1)))
        )
        window = np.full(n, PAD_ID, dtype=np.int64)
        chunk = piece[start : start + n]
        window[: len(chunk)] = chunk
        return torch.from_numpy(self._augment(window, rng))

    def _augment(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = self.augment
        if a.transpose:
            shift = int(rng.integers(-a.transpose, a.transpose + 1))
            moved = self._tables[shift][window]
            if (moved >= 0).all():  # range check: a note would leave the pitch range -> keep as is
                window = moved
        if a.velocity_bins and len(self._velocity_ids):
            shift = int(rng.integers(-a.velocity_bins, a.velocity_bins + 1))
            is_vel = np.isin(window, self._velocity_ids)
            lo, hi = self._velocity_ids[0], self._velocity_ids[-1]
            window = np.where(is_vel, np.clip(window + shift, lo, hi), window)
        return window


class StepSampler(Sampler[int]):
    """Indices ``start_step * batch_size, +1, ...``: the data position of a resumed run."""

    def __init__(self, size: int, batch_size: int, start_step: int = 0):
        self.size, self.start = size, start_step * batch_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.size))

    def __len__(self) -> int:
        return max(0, self.size - self.start)


def make_dataloader(
    dataset: WindowDataset, batch_size: int, *, start_step: int = 0, num_workers: int = 0
) -> DataLoader:
    """Batches (B, L + 1) in step order from ``start_step``; safe with ``num_workers > 0``."""
    if batch_size != dataset.batch_size:
        raise ValueError(
            f"batch_size={batch_size} differs from the dataset's {dataset.batch_size}; the curriculum uses it"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=StepSampler(len(dataset), batch_size, start_step),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


# ---------------------------------------------------------------------------------------------
# evaluation windows


@dataclass(frozen=True)
class EvalWindow:
    """Tokens ``piece[start : start + len(tokens)]``; its targets are tokens[1:]."""

    piece: int
    start: int
    tokens: np.ndarray


def eval_windows(split: SplitData, seq_len: int) -> Iterator[EvalWindow]:
    """Consecutive windows over every piece: each token after BOS is a target exactly once."""
    for p in range(len(split)):
        piece = split.piece(p)
        for start in range(0, max(1, len(piece) - 1), seq_len):
            yield EvalWindow(p, start, piece[start : start + seq_len + 1])


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), for padding-light evaluation."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def eval_batches(split: SplitData, seq_len: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Length-bucketed, PAD-padded (B, <= seq_len + 1) batches of :func:`eval_windows`."""
    windows = [w.tokens for w in eval_windows(split, seq_len)]
    for idx in length_buckets(np.asarray([len(w) for w in windows]), batch_size):
        width = max(len(windows[i]) for i in idx)
        batch = np.full((len(idx), width), PAD_ID, dtype=np.int64)  # (B, L + 1)
        for row, i in enumerate(idx):
            batch[row, : len(windows[i])] = windows[i]
        yield torch.from_numpy(batch)
