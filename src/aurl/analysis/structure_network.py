"""The phrase-boundary networks of :mod:`aurl.analysis.structure` (torch, loaded on first use).

Bidirectional GRUs read :func:`aurl.analysis.structure.bar_features` over every bar of a piece and
give one boundary logit per bar line; the shipped model averages the logits of several networks
fitted with different seeds (``benchmarks/fit_structure_model.py``). The weights ship as
``data/structure_model.safetensors`` beside a JSON of feature means, the phrase-length prior, the
DP balance and the fit's note.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from aurl.analysis.network_files import packaged, read_networks, write_networks
from aurl.analysis.structure import N_BAR_FEATURES


class BoundaryGRU(torch.nn.Module):
    """Linear -> ReLU -> 2-layer bidirectional GRU over the bars -> one boundary logit per bar."""

    def __init__(self, n_in: int = N_BAR_FEATURES, width: int = 48, hidden: int = 32) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(n_in, width)
        self.gru = torch.nn.GRU(width, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, bars, F) -> (B, bars) logits
        return self.out(self.gru(torch.relu(self.inp(x)))[0])[..., 0]


def merge_networks(nets: tuple[BoundaryGRU, ...]) -> BoundaryGRU:
    """One wider network whose logit is exactly the mean of ``nets``' logits.

    Each network keeps its own slice of the units: the input layers are stacked, the recurrent
    and second-layer input weights are block-diagonal per gate and direction, and the output
    layer averages. Three networks of 32 units run as one of 96 in 0.4x the time of three
    calls (the GRU's per-step overhead dominates at this size on a CPU).
    """
    k = len(nets)
    n_in, width = nets[0].inp.in_features, nets[0].inp.out_features
    h = nets[0].gru.hidden_size
    out = BoundaryGRU(n_in, width * k, h * k)
    with torch.no_grad():
        out.inp.weight.copy_(torch.cat([n.inp.weight for n in nets]))
        out.inp.bias.copy_(torch.cat([n.inp.bias for n in nets]))
        for name, big in out.gru.named_parameters():
            big.zero_()
            parts = [getattr(n.gru, name) for n in nets]
            for j, p in enumerate(parts):
                for g in range(3):  # gates r, z, n: row chunks of size h
                    rows = slice(g * h * k + j * h, g * h * k + (j + 1) * h)
                    src = p[g * h : (g + 1) * h]
                    if name.startswith("bias"):
                        big[rows] = src
                    elif name.startswith("weight_hh"):
                        big[rows, j * h : (j + 1) * h] = src
                    elif "_l0" in name:  # first layer reads this network's input units
                        big[rows, j * width : (j + 1) * width] = src
                    else:  # second layer reads this network's forward and backward units
                        big[rows, j * h : (j + 1) * h] = src[:, :h]
                        big[rows, h * k + j * h : h * k + (j + 1) * h] = src[:, h:]
        w = torch.zeros(1, 2 * h * k)
        for j, n in enumerate(nets):
            w[0, j * h : (j + 1) * h] = n.out.weight[0, :h] / k
            w[0, h * k + j * h : h * k + (j + 1) * h] = n.out.weight[0, h:] / k
        out.out.weight.copy_(w)
        out.out.bias.copy_(torch.stack([n.out.bias for n in nets]).mean(dim=0))
    return out.eval()


@dataclass(frozen=True)
class StructureModel:
    """Boundary networks (their logits are averaged) and the phrase-length prior."""

    nets: tuple[BoundaryGRU, ...]
    mean: np.ndarray
    std: np.ndarray
    length_logp: np.ndarray  # (L,) log frequency of phrases of 1..L bars
    length_weight: float
    offset: float

    def __post_init__(self) -> None:
        if not self.nets:
            raise ValueError("a structure model needs at least one boundary network")
        if self.mean.shape != (N_BAR_FEATURES,) or self.std.shape != (N_BAR_FEATURES,):
            raise ValueError(
                f"structure model standardises {self.mean.shape} features, "
                f"bar_features gives {N_BAR_FEATURES}"
            )

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """(bars,) boundary logit of each bar line from :func:`bar_features`."""
        x = torch.tensor((feats - self.mean) / self.std, dtype=torch.float32)[None]
        with torch.inference_mode():
            return self.merged(x)[0].double().numpy()

    @cached_property
    def merged(self) -> BoundaryGRU:
        """The networks run as one (:func:`merge_networks`)."""
        return merge_networks(self.nets) if len(self.nets) > 1 else self.nets[0]

    def to_files(self, stem: Path, note: str) -> None:
        """``stem.json`` (means, prior, DP balance, note) and ``stem.safetensors`` (weights)."""
        meta = {
            "note": note,
            "mean": np.round(self.mean, 6).tolist(),
            "std": np.round(self.std, 6).tolist(),
            "length_logp": np.round(self.length_logp, 6).tolist(),
            "length_weight": self.length_weight,
            "offset": self.offset,
        }
        write_networks(stem, self.nets, meta)

    @classmethod
    def from_bytes(cls, meta: dict, weights: bytes) -> StructureModel:
        return cls(
            nets=read_networks(meta, weights, BoundaryGRU),
            mean=np.asarray(meta["mean"], dtype=np.float64),
            std=np.asarray(meta["std"], dtype=np.float64),
            length_logp=np.asarray(meta["length_logp"], dtype=np.float64),
            length_weight=float(meta["length_weight"]),
            offset=float(meta["offset"]),
        )


@lru_cache(maxsize=1)
def default_model() -> StructureModel:
    """The committed networks: ``data/structure_model.{json,safetensors}``."""
    return StructureModel.from_bytes(*packaged("structure_model"))
