"""The key network of :mod:`aurl.analysis.key` (torch, loaded on first use).

A transposition-equivariant convolution over the beats. The beat profiles of
:func:`aurl.analysis.chords.beat_features` (notes sounding, notes starting, bass) are rotated to
each of the 12 candidate tonics; one shared stack of dilated 1-D convolutions reads each rotation
(receptive field +-64 beats) and, beside every beat's own units, the mean of those units over the
whole piece; two outputs per tonic give the major and minor score. The shipped model averages the
log-probabilities of networks fitted with different seeds. Transposing a piece therefore
rotates its key scores exactly (tested), and the network never has to learn the same cadence in
twelve keys. The beat-level log-probabilities are summed over windows of ``window_beats`` and a
Viterbi with ``change_penalty`` per change gives the key segments.

Fitted by ``benchmarks/fit_key_model.py`` on POP909 001-700 (701-800 never read) and the Bach
chorales of the training split, with the keys their notation states. Weights ship as
``data/key_model.safetensors`` beside ``data/key_model.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from aurl.analysis.network_files import packaged, read_networks, write_networks

N_ROTATED = 36  # sounding, onset and bass profiles seen from one tonic
N_SHARED = 7  # 3 loudness/density columns + the beat's position in the bar (one-hot of 4)
# (tonic, interval) -> pitch class
_ROTATE = (np.arange(12)[:, None] + np.arange(12)[None, :]) % 12


class KeyConvNet(torch.nn.Module):
    """Per tonic: conv(3) -> residual dilated convs -> [own units, piece mean] -> (major, minor)."""

    def __init__(self, hidden: int = 32, dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        self.inp = torch.nn.Conv1d(N_ROTATED + N_SHARED, hidden, 3, padding=1)
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(hidden, hidden, 3, padding=d, dilation=d) for d in self.dilations
        )
        self.out = torch.nn.Conv1d(2 * hidden, 2, 1)

    def forward(
        self, rotated: torch.Tensor, shared: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, S, 12, 36), (B, S, 7), (B, S) -> (B, S, 24) logits: majors C..B, then minors."""
        B, S = rotated.shape[:2]
        x = torch.cat([rotated, shared[:, :, None, :].expand(B, S, 12, N_SHARED)], dim=-1)
        h = torch.relu(self.inp(x.permute(0, 2, 3, 1).reshape(B * 12, -1, S)))
        for conv in self.convs:
            h = h + torch.relu(conv(h))
        m = mask.repeat_interleave(12, dim=0)[:, None, :]
        mean = (h * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
        o = self.out(torch.cat([h, mean.expand_as(h)], dim=1)).reshape(B, 12, 2, S)
        return o.permute(0, 3, 2, 1).reshape(B, S, 24)


def network_inputs(
    feats: np.ndarray, extra: np.ndarray, pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(S, 12, 36) profiles rotated to each tonic and (S, 7) tonic-free columns, float32."""
    f = feats.reshape(-1, 3, 12)[:, :, _ROTATE]  # (S, 3, tonic, interval)
    rotated = f.transpose(0, 2, 1, 3).reshape(len(feats), 12, N_ROTATED)
    shared = np.concatenate([extra, np.eye(4)[np.clip(pos, 0, 3)]], axis=1)
    return rotated.astype(np.float32), shared.astype(np.float32)


@dataclass(frozen=True)
class KeyNetwork:
    """The networks (their log-probabilities are averaged) and the segmentation settings."""

    nets: tuple[KeyConvNet, ...]
    window_beats: int
    change_penalty: float

    def __post_init__(self) -> None:
        if not self.nets:
            raise ValueError("a key model needs at least one network")

    def log_probs(self, feats: np.ndarray, extra: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """(S, 24) log P(key) per beat; state k < 12 is major on k, k >= 12 minor on k - 12."""
        rotated, shared = network_inputs(feats, extra, pos)
        args = (torch.from_numpy(rotated)[None], torch.from_numpy(shared)[None])
        mask = torch.ones(1, len(feats))
        with torch.inference_mode():
            lp = [torch.log_softmax(net(*args, mask)[0], dim=-1) for net in self.nets]
            return torch.stack(lp).mean(dim=0).double().numpy()

    def to_files(self, stem: Path, note: str) -> None:
        """``stem.json`` (architecture, settings, note) and ``stem.safetensors`` (weights)."""
        meta = {
            "note": note,
            "hidden": self.nets[0].inp.out_channels,
            "dilations": list(self.nets[0].dilations),
            "window_beats": self.window_beats,
            "change_penalty": self.change_penalty,
        }
        write_networks(stem, self.nets, meta)

    @classmethod
    def from_bytes(cls, meta: dict, weights: bytes) -> KeyNetwork:
        def build() -> KeyConvNet:
            return KeyConvNet(int(meta["hidden"]), tuple(int(d) for d in meta["dilations"]))

        nets = read_networks(meta, weights, build)
        return cls(nets, int(meta["window_beats"]), float(meta["change_penalty"]))


@lru_cache(maxsize=1)
def default_model() -> KeyNetwork:
    """The committed network: ``data/key_model.{json,safetensors}``."""
    return KeyNetwork.from_bytes(*packaged("key_model"))
