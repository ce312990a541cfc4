"""Continuous batching: requests join a running decode at the next step and leave when done.

One thread owns the model. Each loop it (1) admits queued requests into free rows of a
:class:`aurl.models.cache.RowCache` (a one-row prefill of the prompt, exactly as
``generation.sample`` starts), (2) samples one token for every active row with that row's own
constraints, filters and seeded generator, and (3) runs *one* batched forward (:func:`row_step`)
for all rows still going, each at its own position. A finished, timed-out or abandoned row leaves
and the last active row moves into its place, so the active rows are always ``0..n-1`` and a step
computes only those.

Per-row state mirrors ``generation.sample._sample`` line for line (the same ``StopRule``, the same
``ConstraintSet.apply``, ``apply_filters`` and inverse-CDF ``_draw`` with a ``torch.Generator``
seeded by the request's seed), so a seed gives the CLI's piece whoever else shares the batch:
rows never read each other's state, and the batched forward agrees with the single-row forward to
~1e-5 in the logits (tests/serving/test_scheduler.py checks token-for-token equality).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aurl.generation.filters import apply_filters
from aurl.generation.pipeline import Plan
from aurl.generation.sample import DROP_FRACTION, _draw, _finished_by_time, sample
from aurl.models.cache import RowCache, row_step, supports_rows

log = logging.getLogger(__name__)

REPETITION_WINDOW = 256
"""Tokens of history the repetition penalty sees (as generation.sample)."""


class QueueFullError(RuntimeError):
    """The bounded queue is full: the server answers 429 with Retry-After."""


@dataclass
class Job:
    """One generation request on its way through the scheduler."""

    plan: Plan
    seed: int
    deadline: float
    """``time.monotonic()`` after which the row is dropped (per-request timeout)."""
    on_token: Callable[[Job, int | None], None] | None = None
    """Called from the scheduler thread once with None when the row starts (constraints started),
    then after each sampled token (streaming); must not block."""
    on_done: Callable[[Job], None] | None = None
    """Called from the scheduler thread when the job ends (finished, timed out or cancelled)."""
    new: list[int] = field(default_factory=list)
    error: str | None = None
    """Why it ended early: ``timeout``, ``cancelled`` (client gone) or an internal error."""
    submitted: float = field(default_factory=time.monotonic)
    started: float = 0.0
    finished: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.constraints = self.plan.new_constraints()
        self.rule = self.plan.rule
        self.gen = torch.Generator(device="cpu").manual_seed(int(self.seed))
        self.history = list(self.plan.prompt_ids)

    def cancel(self) -> None:
        """Free the row at the next step (the client disconnected)."""
        self.cancelled = True


@dataclass
class Stats:
    """Counters the /metrics endpoint reads (written only by the scheduler thread)."""

    steps: int = 0
    tokens: int = 0
    active: int = 0
    occupancy_sum: int = 0
    finished: int = 0
    step_seconds: float = 0.0


class Scheduler:
    """Decode all active requests together; ``max_batch=1`` serves them one at a time."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        context: int | None = None,
        threads: int | None = 1,
        batching: bool = True,
    ) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1 and max_queue={max_queue} >= 0")
        onnx = not isinstance(model, torch.nn.Module)
        if batching and not onnx and not supports_rows(model):
            log.warning(
                "continuous batching off: model.attention=%s (needs full causal attention); "
                "serving one request at a time", getattr(model.cfg, "attention", "?"),
            )  # fmt: skip
            batching = False
        self.batching = batching
        if not batching:
            max_batch = 1
        self.model = model.eval()
        self.max_batch, self.max_queue = max_batch, max_queue
        self.context = int(context or model.cfg.max_seq_len)
        self.threads = threads
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue + max_batch)
        self.stats = Stats()
        self.cache = None
        self.step = row_step
        if batching and onnx:  # an ONNX export: the decode graph takes per-row positions too
            from aurl.deploy.onnx_model import OnnxRowCache, onnx_row_step

            self.cache, self.step = OnnxRowCache(model.cfg, max_batch, self.context), onnx_row_step
        elif batching:
            self.cache = RowCache.for_model(model, max_batch, self.context)
        self.rows: list[Job] = []
        self.last_token: list[int] = []
        self.pending: dict[int, torch.Tensor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aurl-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def queued(self) -> int:
        return self.queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFullError` when ``max_queue`` requests already wait."""
        if self.queue.qsize() >= self.max_queue + max(0, self.max_batch - len(self.rows)):
            raise QueueFullError(
                f"{self.queue.qsize()} requests already wait (max_queue={self.max_queue})"
            )
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"queue full (max_queue={self.max_queue})") from None

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            try:
                if not self.batching:
                    self._serial()
                    continue
                self._admit(block=not self.rows)
                if not self.rows:
                    continue
                self._sample_and_step()
            except Exception as err:  # a bug must not leave clients waiting forever
                log.exception("scheduler step failed")
                for job in list(self.rows):
                    self._finish(job, f"internal error: {err}")
                self.rows, self.last_token, self.pending = [], [], {}

    def _admit(self, block: bool) -> None:
        while len(self.rows) < self.max_batch:
            try:
                job = self.queue.get(timeout=0.05) if block else self.queue.get_nowait()
            except queue.Empty:
                return
            block = False
            if job.cancelled or time.monotonic() > job.deadline:
                self._finish(job, "cancelled" if job.cancelled else "timeout")
                continue
            job.started = time.monotonic()
            job.constraints.start([job.plan.prompt_ids])
            if job.on_token is not None:
                job.on_token(job, None)
            row = len(self.rows)
            self.rows.append(job)
            self.last_token.append(0)
            self.pending[row] = self._prefill(row, job.history)

    @torch.inference_mode()
    def _prefill(self, row: int, history: list[int]) -> torch.Tensor:
        """Logits (V,) after the row's history, its cache loaded into ``row`` (as _Window.first)."""
        window = torch.tensor(history[-self.context :], dtype=torch.long)[None]  # (1, T)
        kv = self.model.new_cache(1, self.context)
        logits = self.model(window, cache=kv, logits_for="last").logits[0, -1].float()  # (V,)
        self.cache.load(row, kv)
        return logits

    def _sample_and_step(self) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        live = []
        keep: list[bool] = []
        for job in self.rows:
            if job.cancelled or now > job.deadline:
                job.error = "cancelled" if job.cancelled else "timeout"
            live.append(job.error is None)
        tokens = self._draw_rows([r for r, ok in enumerate(live) if ok])
        for row, ok in enumerate(live):
            keep.append(ok and self._take(row, self.rows[row], tokens[row]))
        self.stats.tokens += sum(live)
        # leave: move the last active rows into the holes so active rows stay 0..n-1
        for row in sorted((r for r, k in enumerate(keep) if not k), reverse=True):
            job = self.rows[row]
            last = len(self.rows) - 1
            if row != last:
                self.cache.move(last, row)
                self.rows[row], self.last_token[row] = self.rows[last], self.last_token[last]
            self.rows.pop()
            self.last_token.pop()
            self.cache.clear(last)
            self._finish(job, job.error)
        self.pending = {}
        n = len(self.rows)
        self.stats.active = n
        if n == 0:
            return
        for row, job in enumerate(self.rows):
            if self.cache.lengths[row] + 1 > self.cache.max_len:
                self._slide(row, job)
        tokens = torch.tensor(self.last_token, dtype=torch.long)
        out = self.step(self.model, tokens, self.cache)  # (n, V)
        self.pending = dict(enumerate(out))
        self.stats.steps += 1
        self.stats.occupancy_sum += n
        self.stats.step_seconds += time.perf_counter() - t0

    def _slide(self, row: int, job: Job) -> None:
        """The row's cache is full: drop its oldest 1/8 (rotary) or re-encode a shorter window."""
        drop = max(1, self.context // DROP_FRACTION)
        if self.model.cfg.position == "rope":
            self.cache.drop_oldest(row, drop)
        else:  # learned positions: as _Window.next, re-encode history[-keep:] from position 0
            keep = self.context - drop
            # the new token is fed by row_step, so prefill only what precedes it
            self._prefill(row, job.history[-keep:-1])

    def _draw_rows(self, rows: list[int]) -> dict[int, int]:
        """Next token of each row in ``rows``: its own constraints, then filters and the draw for
        rows that share filter settings together (as ``sample`` does for a batch of pieces; each
        row still draws from its own generator, so its token does not depend on the others)."""
        masked = self._constrain(rows)
        groups: dict[tuple, list[int]] = {}
        for r in rows:
            filters = self.rows[r].plan.filters
            if filters.get("repetition_penalty", 1.0) != 1.0:  # needs this row's own history
                groups[("row", r)] = [r]
            else:
                groups.setdefault(tuple(sorted(filters.items())), []).append(r)
        out: dict[int, int] = {}
        for members in groups.values():
            job = self.rows[members[0]]
            hist = None
            if len(members) == 1 and job.plan.filters.get("repetition_penalty", 1.0) != 1.0:
                hist = torch.tensor(job.history[-REPETITION_WINDOW:], dtype=torch.long)[None]
            logits = apply_filters(torch.cat([masked[r] for r in members]), job.plan.filters, hist)
            drawn = _draw(torch.softmax(logits, dim=-1), [self.rows[r].gen for r in members])
            out.update(zip(members, drawn.tolist(), strict=True))
        return out

    def _constrain(self, rows: list[int]) -> dict[int, torch.Tensor]:
        """Each row's logits (1, V) masked by its own constraint state. Rows asking for the same
        constraints go through one ``ConstraintSet.apply`` (its masks are per state; one call
        saves the per-call overhead, ~0.8 ms a row on these loaded cores)."""
        groups: dict[str, list[int]] = {}
        for r in rows:
            key = repr(sorted(self.rows[r].plan.constraint_options.items()))
            groups.setdefault(key, []).append(r)
        out: dict[int, torch.Tensor] = {}
        for members in groups.values():
            cs = self.rows[members[0]].constraints
            own = cs.states
            cs.states = [self.rows[r].constraints.states[0] for r in members]
            try:
                masked = cs.apply(torch.stack([self.pending[r] for r in members]))  # (k, V)
            finally:
                cs.states = own
            out.update((r, masked[i : i + 1]) for i, r in enumerate(members))
        return out

    def _take(self, row: int, job: Job, tok: int) -> bool:
        """Append the row's sampled token; True while the row goes on."""
        job.new.append(tok)
        job.history.append(tok)
        job.constraints.advance([tok])
        if job.on_token is not None:
            job.on_token(job, tok)
        ended = tok == job.rule.eos_id or _finished_by_time(job.constraints, job.rule)[0]
        if ended or len(job.new) >= job.rule.max_new_tokens:
            return False
        self.last_token[row] = tok
        return True

    def _serial(self) -> None:
        """Batching off: one request at a time through the CLI's own loop (``sample``)."""
        try:
            job = self.queue.get(timeout=0.05)
        except queue.Empty:
            return
        if job.cancelled or time.monotonic() > job.deadline:
            self._finish(job, "cancelled" if job.cancelled else "timeout")
            return
        job.started = time.monotonic()
        self.stats.active = 1
        t0 = time.perf_counter()
        job.new = sample(
            self.model, job.plan.prompt_ids, num=1, rule=job.rule, filters=job.plan.filters,
            constraints=job.constraints, seeds=[job.seed], threads=self.threads,
        )[0]  # fmt: skip
        self.stats.tokens += len(job.new)
        self.stats.steps += len(job.new)
        self.stats.occupancy_sum += len(job.new)
        self.stats.step_seconds += time.perf_counter() - t0
        self.stats.active = 0
        self._finish(job, None)

    def _finish(self, job: Job, error: str | None) -> None:
        job.error = error
        job.finished = time.monotonic()
        self.stats.finished += 1
        job.done.set()
        if job.on_done is not None:
            job.on_done(job)
