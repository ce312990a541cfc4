"""Decoding loops: batched sampling and beam search over a KV cache, sliding past the context.

The model contract (``aurl.models``): ``model(tokens (B, T), cache=cache, logits_for="last")``
returns ``.logits (B, 1, V)`` and advances the cache; ``model.new_cache(B, max_len)`` gives a cache
with ``reorder(indices)``, ``drop_oldest(n)``, ``length`` and ``max_len``. Past ``max_len`` the
oldest positions are dropped a chunk at a time; with rotary positions the kept keys were rotated by
their true absolute positions, so this is exact relative attention over the kept window
(``KVCache`` docstring). With learned positions the window is re-encoded from position 0 instead.

The loop is kept lean because per-token overhead, not arithmetic, bounds CPU decoding (FACTS.md:
x-transformers spends 5-7 ms per token on ~0.1 ms of arithmetic): one forward per step on a
preallocated cache, constraint masks built in numpy for the whole batch, no ``torch.cat`` growth.

Every row has its own ``torch.Generator`` (seed + row), so a piece is reproduced by its seed
whatever the batch it was generated in.

Shape letters: B batch (rows or beams), T tokens, V vocabulary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from aurl.generation.constraints import TIME_EPS, ConstraintSet
from aurl.generation.filters import apply_filters

log = logging.getLogger(__name__)

DROP_FRACTION = 8
"""When the cache is full, drop max_len // 8 oldest positions at once: one copy per 1/8 context
instead of one per token."""


@dataclass
class StopRule:
    """When a row is finished: EOS, ``max_new_tokens``, or its time reaching ``end_beats`` at an
    event boundary (needs constraint states to know the time)."""

    eos_id: int
    max_new_tokens: int
    end_beats: float | None = None


class _Window:
    """The model plus its cache; slides when full."""

    def __init__(
        self, model: torch.nn.Module, batch: int, use_cache: bool, context: int | None = None
    ):
        self.model = model
        self.context = int(context or model.cfg.max_seq_len)
        self.rope = getattr(model.cfg, "position", "rope") == "rope"
        self.use_cache = use_cache
        self.cache = model.new_cache(batch, self.context) if use_cache else None

    def first(self, history: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after the whole history (B, T) (prefill)."""
        window = history[:, -self.context :]  # (B, ≤context)
        if self.cache is not None:
            self.cache = self.model.new_cache(history.shape[0], self.context)
        return self.model(window, cache=self.cache, logits_for="last").logits[:, -1].float()

    def next(self, history: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after appending history[:, -1] (the history includes it)."""
        if self.cache is None:
            return self.model(history[:, -self.context :], logits_for="last").logits[:, -1].float()
        if self.cache.length + 1 > self.cache.max_len:
            drop = max(1, self.context // DROP_FRACTION)
            if self.rope:
                self.cache.drop_oldest(drop)
            else:  # learned absolute positions end at max_seq_len: re-encode a shorter window
                keep = self.context - drop
                self.cache = self.model.new_cache(history.shape[0], self.context)
                return (
                    self.model(history[:, -keep:], cache=self.cache, logits_for="last")
                    .logits[:, -1]
                    .float()
                )
        return (
            self.model(history[:, -1:], cache=self.cache, logits_for="last").logits[:, -1].float()
        )

    def reorder(self, indices: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(indices)


def _finished_by_time(cons: ConstraintSet | None, rule: StopRule) -> list[bool]:
    if cons is None or rule.end_beats is None:
        return [False] * (len(cons.states) if cons else 0)
    return [
        s.time >= rule.end_beats - TIME_EPS and s.boundary == s.length and s.phase != "start"
        for s in cons.states
    ]


def _draw(probs: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """One index per row of probs (B, V) by inverse CDF, row ``b`` drawing from ``gens[b]``
    (one uniform per row: ~10x cheaper than a per-row ``torch.multinomial`` call)."""
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in gens])  # (B,)
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # (B,)
    # never land past the last non-zero entry (u * total rounding)
    last = (probs > 0).cumsum(dim=-1).argmax(dim=-1)  # (B,)
    return torch.minimum(idx, last)


class _Threads:
    """Decode on few threads: per-token work is ~0.1 ms of arithmetic in tiny ops, and on this
    2-core box under load 2 threads gave 17 tokens/s against 435 with 1 (tiny model, batch 1)."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def sample(
    model: torch.nn.Module,
    prompt: Sequence[int],
    *,
    num: int,
    rule: StopRule,
    filters: dict[str, float] | None = None,
    constraints: ConstraintSet | None = None,
    seeds: Sequence[int] | None = None,
    use_cache: bool = True,
    context: int | None = None,
    on_step: Callable[[int], None] | None = None,
    threads: int | None = 1,
) -> list[list[int]]:
    """Sample ``num`` continuations of ``prompt``; returns each row's new tokens (ending in EOS
    when the model or a stop rule ended it). ``seeds[i]`` seeds row ``i`` (default 0..num-1).
    ``threads``: torch threads while decoding (None = leave as is)."""
    with _Threads(threads):
        return _sample(
            model, prompt, num, rule, filters, constraints, seeds, use_cache, context, on_step
        )


@torch.inference_mode()
def _sample(model, prompt, num, rule, filters, constraints, seeds, use_cache, context, on_step):
    if not prompt:
        raise ValueError("prompt must hold at least one token (BOS)")
    model.eval()
    device = next(model.parameters()).device
    seeds = list(seeds) if seeds is not None else list(range(num))
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    T0 = len(prompt)
    buffer = torch.empty(
        num, T0 + rule.max_new_tokens, dtype=torch.long, device=device
    )  # (B, T_max)
    buffer[:, :T0] = torch.tensor(list(prompt), dtype=torch.long)
    history = buffer[:, :T0]  # a view: appending a token is one write, no torch.cat copy
    if constraints is not None:
        constraints.start([list(prompt)] * num)
    window = _Window(model, num, use_cache, context)
    logits = window.first(history)
    done = torch.zeros(num, dtype=torch.bool)
    new: list[list[int]] = [[] for _ in range(num)]
    for step in range(rule.max_new_tokens):
        if constraints is not None:
            logits = constraints.apply(logits.cpu())
        # the repetition penalty looks 256 tokens back (about two bars of a chorale)
        logits = apply_filters(logits, filters or {}, history[:, -256:].cpu() if filters else None)
        nxt = _draw(torch.softmax(logits, dim=-1), gens)  # (B,)
        nxt[done] = rule.eos_id
        for b, tok in enumerate(nxt.tolist()):
            if not done[b]:
                new[b].append(tok)
        if constraints is not None:
            constraints.advance(nxt.tolist())
        done |= nxt == rule.eos_id
        done |= torch.tensor(_finished_by_time(constraints, rule) or [False] * num)
        if on_step is not None:
            on_step(step + 1)
        if bool(done.all()) or step + 1 == rule.max_new_tokens:
            break
        T = history.shape[1]
        buffer[:, T] = nxt.to(device)
        history = buffer[:, : T + 1]  # (B, T+1)
        logits = window.next(history)
    return new


def beam_search(
    model: torch.nn.Module,
    prompt: Sequence[int],
    *,
    beams: int,
    rule: StopRule,
    constraints: ConstraintSet | None = None,
    length_alpha: float = 1.0,
    context: int | None = None,
    on_step: Callable[[int], None] | None = None,
    threads: int | None = 1,
) -> tuple[list[int], float]:
    """The highest-scoring continuation by length-normalised log-probability
    ``sum log p / len ** length_alpha`` (Wu et al. 2016 normalise to compare lengths), and its
    score. Finished hypotheses end in EOS (or reach ``rule.end_beats``)."""
    if beams < 1:
        raise ValueError(f"beam width {beams} must be >= 1")
    with _Threads(threads):
        return _beam(model, prompt, beams, rule, constraints, length_alpha, context, on_step)


@torch.inference_mode()
def _beam(model, prompt, beams, rule, constraints, length_alpha, context, on_step):
    model.eval()
    device = next(model.parameters()).device
    history = torch.tensor([list(prompt)] * beams, dtype=torch.long, device=device)  # (K, T0)
    if constraints is not None:
        constraints.start([list(prompt)] * beams)
    window = _Window(model, beams, True, context)
    logits = window.first(history)
    scores = torch.full((beams,), float("-inf"))
    scores[0] = 0.0  # all beams start identical: expand only one
    alive: list[list[int]] = [[] for _ in range(beams)]
    finished: list[tuple[float, list[int]]] = []

    def norm(total: float, length: int) -> float:
        return total / max(length, 1) ** length_alpha

    for step in range(rule.max_new_tokens):
        if constraints is not None:
            logits = constraints.apply(logits.cpu())
        logp = torch.log_softmax(logits.cpu(), dim=-1)  # (K, V)
        cand = (scores[:, None] + logp).flatten()  # (K·V,)
        V = logp.shape[1]
        order = torch.argsort(cand, descending=True)
        keep_rows: list[int] = []
        keep_tok: list[int] = []
        keep_score: list[float] = []
        last = step + 1 == rule.max_new_tokens
        for flat in order.tolist():
            total = float(cand[flat])
            if total == float("-inf") or len(keep_rows) == beams:
                break
            row, tok = divmod(flat, V)
            seq = [*alive[row], tok]
            ends_by_time = False
            if constraints is not None and rule.end_beats is not None and tok != rule.eos_id:
                probe = constraints.peek(row, tok)
                ends_by_time = (
                    probe.time >= rule.end_beats - TIME_EPS and probe.boundary == probe.length
                )
            if tok == rule.eos_id or ends_by_time or last:
                finished.append((norm(total, len(seq)), seq))
                continue
            keep_rows.append(row)
            keep_tok.append(tok)
            keep_score.append(total)
        if on_step is not None:
            on_step(step + 1)
        if not keep_rows:
            break
        # Early stop only where it is exact: without length normalisation a sum of log-probs
        # (<= 0) can only fall, so no alive beam can overtake the best finished one. With it, an
        # alive beam's mean can still rise, so beams run to EOS or the token cap.
        best_alive = max(keep_score)
        if length_alpha == 0 and finished and max(f[0] for f in finished) >= best_alive:
            break
        idx = torch.tensor(keep_rows + [keep_rows[0]] * (beams - len(keep_rows)))
        toks = keep_tok + [keep_tok[0]] * (beams - len(keep_tok))
        scores = torch.tensor(keep_score + [float("-inf")] * (beams - len(keep_score)))
        alive = [[*alive[r], t] for r, t in zip(idx.tolist(), toks, strict=True)]
        window.reorder(idx.to(device))
        history = torch.cat(
            [history.index_select(0, idx.to(device)), torch.tensor(toks, device=device)[:, None]],
            dim=1,
        )
        if constraints is not None:
            constraints.reorder(idx.tolist())
            constraints.advance(toks)
        logits = window.next(history)
    pool = finished or [
        (norm(float(s), len(a)), a) for s, a in zip(scores.tolist(), alive, strict=True)
    ]
    best = max(pool, key=lambda f: f[0])
    return best[1], best[0]


def steps_bar(total: int, desc: str) -> Callable[[int], None]:
    """A tqdm progress callback with ETA (stderr, only on a terminal); returns ``on_step``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="tok", disable=None, leave=False)
    state = {"n": 0}

    def on_step(n: int) -> None:
        bar.update(n - state["n"])
        state["n"] = n
        if n >= total:
            bar.close()

    on_step.total = total  # type: ignore[attr-defined]
    return on_step


def seconds_to_beats(seconds: float, bpm: float) -> float:
    """Beats in ``seconds`` of music at ``bpm`` quarter notes per minute."""
    if seconds <= 0 or bpm <= 0 or not math.isfinite(seconds):
        raise ValueError(f"--seconds {seconds} and tempo {bpm} BPM must be > 0")
    return seconds * bpm / 60.0
