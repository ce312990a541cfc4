"""A bidirectional GRU over the notes in time order: the last word on P(melody) per note.

The stacked per-note scorer (:mod:`aurl.analysis.melody`) sees each note through hand-made
context windows; this network reads the piece as a sequence (per note: the 14 note features, the
time since the previous onset, whether a new onset group starts, and the stacked scorer's
probability) in overlapping windows of 512 notes and re-scores every note from the notes before
and after it. Settings chosen by a fit on POP909 001-600 with 601-700 as tuning songs (96
hidden units, 12 epochs, threshold 0.35; 601-700 note F1 0.751 with the stacked scorer alone ->
0.839), then refitted on 001-700 (``benchmarks/fit_melody_sequence.py``): held out (701-800) note
F1 0.773 -> 0.860 with int8 weights (BENCHMARKS.md).

The weights (1.1 MB, float32) ship as ``data/melody_sequence.safetensors`` beside a small JSON of
feature means, the threshold and the fit's note.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from aurl.analysis.notes import NoteArray

N_EXTRA = 3  # columns after the standardised note features: log gap, new group, stacked P
# Notes per window and the step between windows when scoring a piece (training used 384 / 192,
# benchmarks/fit_melody_sequence.py). With the 001-600 fit, note F1 on 601-700 and seconds for those 100 songs on
# one core (melody extraction and scoring): 384 / 192 0.8385 6.5 s; 384 / 288 0.8374 5.1 s;
# 512 / 384 0.8396 6.0 s; 640 / 512 0.8402 6.7 s; 768 / 384 0.8401 7.9 s; 768 / 640 0.8379 7.4 s.
WINDOW, HOP = 512, 384


class MelodyGRU(torch.nn.Module):
    """Linear -> ReLU -> 2-layer bidirectional GRU -> one logit per note."""

    def __init__(self, n_in: int, hidden: int = 64) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(n_in, hidden)
        self.gru = torch.nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, F) -> (B, N) logits
        return self.out(self.gru(torch.relu(self.inp(x)))[0])[..., 0]


def sequence_inputs(
    features: np.ndarray,
    groups: np.ndarray,
    onset: np.ndarray,
    stacked: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
) -> np.ndarray:
    """(N, F + 3) network input from ``melody.note_features`` and the stacked probabilities."""
    gap = np.log1p(np.r_[0.0, np.diff(onset)] * 10.0)
    new_group = np.r_[0.0, (np.diff(groups) > 0).astype(np.float64)]
    return np.concatenate(
        [(features - mean) / std, gap[:, None], new_group[:, None], (stacked[:, None] - 0.5) * 4],
        axis=1,
    ).astype(np.float32)


class SequenceScorer:
    """The shipped network with its feature standardisation and decision threshold."""

    def __init__(self, net: MelodyGRU, mean: np.ndarray, std: np.ndarray, threshold: float):
        self.net, self.mean, self.std, self.threshold = net.eval(), mean, std, threshold

    def probability(
        self, notes: NoteArray, features: np.ndarray, groups: np.ndarray, stacked: np.ndarray
    ) -> np.ndarray:
        x = sequence_inputs(features, groups, notes.onset, stacked, self.mean, self.std)
        return self.window_probability(x)

    def window_probability(self, x: np.ndarray) -> np.ndarray:
        """P per row of ``x`` from windows of :data:`WINDOW` notes, run as one batch.

        Windows start every :data:`HOP` notes; each note takes the answer of the one window where
        it is at least ``(WINDOW - HOP) / 2`` notes from either edge (the first and last windows
        also cover the piece's ends). Several times faster than one pass over the whole piece
        (the GRU's steps are sequential).
        """
        n = len(x)
        margin = (WINDOW - HOP) // 2
        starts = np.arange(0, max(n - WINDOW, 0) + HOP, HOP)
        starts = starts[(starts == 0) | (starts + margin < n)]
        batch = np.zeros((len(starts), min(WINDOW, n), x.shape[1]), dtype=np.float32)
        for b, s in enumerate(starts):
            part = x[s : s + WINDOW]
            batch[b, : len(part)] = part
        with torch.inference_mode():
            p = torch.sigmoid(self.net(torch.from_numpy(batch))).double().numpy()  # (W, L)
        out = np.empty(n)
        for b, s in enumerate(starts):
            lo = 0 if b == 0 else s + margin
            hi = n if b == len(starts) - 1 else s + margin + HOP
            out[lo:hi] = p[b, lo - s : hi - s]
        return out


def int8_dynamic(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with its GRU and linear weights in int8, activations quantised on the fly (CPU).

    On POP909 601-700 (one core): the network's time 7.1 s -> 3.8 s per 100 songs, melody note F1
    0.8396 -> 0.8389. torch marks ``quantize_dynamic`` as moving to torchao; with torch pinned at
    2.13 it is the maintained call that covers ``nn.GRU``, so its notice is silenced here.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            net, {torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8
        )


def load_scorer(meta: dict, weights: bytes, quantized: bool = True) -> SequenceScorer:
    """A scorer from the JSON ``meta`` and safetensors ``weights`` that the fit script writes."""
    from safetensors.torch import load

    net = MelodyGRU(len(meta["mean"]) + N_EXTRA, int(meta["hidden"]))
    net.load_state_dict(load(weights))
    if quantized:
        net = int8_dynamic(net.eval())
    return SequenceScorer(
        net,
        np.asarray(meta["mean"], dtype=np.float64),
        np.asarray(meta["std"], dtype=np.float64),
        float(meta["threshold"]),
    )


@lru_cache(maxsize=2)
def default_scorer(quantized: bool = True) -> SequenceScorer:
    """The committed network (``data/melody_sequence.{json,safetensors}``), int8 unless asked
    otherwise (:func:`int8_dynamic`; the float32 network is the reference the tests compare with)."""
    from aurl.analysis.network_files import packaged

    return load_scorer(*packaged("melody_sequence"), quantized)
