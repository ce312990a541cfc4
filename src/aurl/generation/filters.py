"""Sampling filters: small pure functions ``(logits (B, V), ...) -> logits (B, V)`` chosen by name.

Banned entries are set to ``-inf``; no filter ever bans every entry of a row (each keeps at least
the arg-max), so sampling after any chain of filters stays well defined. The split of decoding into
a table of tiny filters follows x-transformers' ``autoregressive_wrapper.py``.

Shape letters: B batch, V vocabulary, T generated-so-far length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NEG_INF = float("-inf")


def temperature(logits: torch.Tensor, value: float = 1.0) -> torch.Tensor:
    """Divide by ``value``: < 1 sharpens, > 1 flattens the distribution."""
    if value <= 0:
        raise ValueError(f"temperature={value} must be > 0")
    return logits if value == 1.0 else logits / value


def top_k(logits: torch.Tensor, k: int = 0) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (0 = keep all)."""
    k = int(k)
    if k < 0:
        raise ValueError(f"top_k={k} must be >= 0 (0 disables it)")
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p(logits: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set whose mass reaches ``p``."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p={p} must be in (0, 1]")
    if p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the mass *before* it already reaches p; the first token always stays.
    drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p(logits: torch.Tensor, p: float = 0.0) -> torch.Tensor:
    """Keep tokens whose probability is at least ``p`` times the top one (Nguyen et al. 2024)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"min_p={p} must be in [0, 1]")
    if p == 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    limit = probs.amax(dim=-1, keepdim=True) * p  # (B, 1)
    return logits.masked_fill(probs < limit, NEG_INF)


def repetition_penalty(
    logits: torch.Tensor, penalty: float = 1.0, history: torch.Tensor | None = None
) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): tokens in ``history (B, T)`` get logit/penalty if
    positive, logit*penalty if negative. Music repeats by nature, so keep it near 1 (1.0-1.2)."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty={penalty} must be > 0")
    if penalty == 1.0 or history is None or history.numel() == 0:
        return logits
    seen = torch.gather(logits, -1, history)  # (B, T)
    scaled = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, history, scaled)


FILTERS: dict[str, Callable[..., torch.Tensor]] = {
    "temperature": temperature,
    "top_k": top_k,
    "top_p": top_p,
    "min_p": min_p,
    "repetition_penalty": repetition_penalty,
}


def apply_filters(
    logits: torch.Tensor,
    settings: dict[str, float],
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the filters named in ``settings`` (name -> its one parameter), in the usual order:
    repetition penalty, temperature, then the truncations top-k, top-p, min-p."""
    unknown = sorted(set(settings) - set(FILTERS))
    if unknown:
        raise ValueError(f"unknown sampling filter(s) {unknown}; choose from {sorted(FILTERS)}")
    if "repetition_penalty" in settings:
        logits = repetition_penalty(logits, settings["repetition_penalty"], history)
    for name in ("temperature", "top_k", "top_p", "min_p"):
        if name in settings:
            logits = FILTERS[name](logits, settings[name])
    return logits
