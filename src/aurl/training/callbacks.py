"""Training-time helpers: the anomaly guard, throughput/memory logging, samples at validation, ETA bar.

The guard is a plain object (no Lightning) so its decisions can be tested alone; the module asks it
once per optimizer step, after gradients are synchronized across ranks, so every DDP rank takes the
same skip/keep decision and no collective ever hangs.
"""

from __future__ import annotations

import logging
import math
import resource
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar, WeightAveraging

log = logging.getLogger(__name__)

# A step whose gradient norm exceeds this multiple of the running median is skipped: an order of
# magnitude is the threshold the assignment (issue 3) set; skipping the batches around a loss spike
# is what PaLM did (Chowdhery et al. 2022, sec. 5.1).
SPIKE_FACTOR = 10.0
# The median needs some history before it means anything; warmup steps are never judged as spikes.
SPIKE_MIN_HISTORY = 20
SPIKE_WINDOW = 100


class TrainingDivergedError(RuntimeError):
    """Raised after ``trainer.max_bad_steps`` consecutive skipped steps."""


class AnomalyGuard:
    """Decides per optimizer step whether the update is sane; counts consecutive bad steps."""

    def __init__(self, max_bad_steps: int, spike_factor: float = SPIKE_FACTOR) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"trainer.max_bad_steps={max_bad_steps} must be >= 1")
        self.max_bad_steps = max_bad_steps
        self.spike_factor = spike_factor
        self.history: deque[float] = deque(maxlen=SPIKE_WINDOW)
        self.consecutive_bad = 0
        self.total_bad = 0

    def check(self, grad_norm: float, step: int) -> bool:
        """True when the step may proceed; False (and a warning) when it must be skipped.

        Raises ``TrainingDivergedError`` when ``max_bad_steps`` steps in a row were bad.
        """
        reason = None
        if not math.isfinite(grad_norm):
            reason = f"non-finite gradient norm ({grad_norm}) — the loss was NaN/inf"
        elif len(self.history) >= SPIKE_MIN_HISTORY:
            median = statistics.median(self.history)
            if grad_norm > self.spike_factor * median:
                reason = (
                    f"gradient-norm spike {grad_norm:.3g} > {self.spike_factor:g} x running median "
                    f"{median:.3g}"
                )
        if reason is None:
            self.history.append(grad_norm)
            self.consecutive_bad = 0
            return True
        self.consecutive_bad += 1
        self.total_bad += 1
        log.warning(
            "step %d skipped: %s (%d/%d consecutive bad steps allowed)",
            step,
            reason,
            self.consecutive_bad,
            self.max_bad_steps,
        )
        if self.consecutive_bad >= self.max_bad_steps:
            raise TrainingDivergedError(
                f"training stopped at step {step}: {self.consecutive_bad} consecutive bad steps "
                f"(last: {reason}). The last good checkpoint is kept in checkpoints/last.ckpt; "
                "lower optim.lr, raise optim.warmup_steps or use trainer.precision=32-true, then "
                "resume with `aurl train --resume RUN_DIR`"
            )
        return False


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA max allocated when on GPU, else the RSS high-water mark."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class ThroughputMonitor(Callback):
    """Logs training tokens/s (non-PAD input tokens, summed over ranks) and peak memory."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._t0: float | None = None
        self._tokens = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        tokens = pl_module.last_batch_tokens * trainer.world_size
        if self._t0 is None:  # the first batch includes warm-up costs; start timing after it
            self._t0, self._tokens = now, 0
            return
        self._tokens += tokens
        if trainer.global_step % self.every_n_steps == 0 and now > self._t0:
            pl_module.log("perf/tokens_per_s", self._tokens / (now - self._t0), rank_zero_only=True)
            pl_module.log("perf/peak_mem_mb", peak_memory_mb(), rank_zero_only=True)
            self._t0, self._tokens = now, 0


class SampleWriter(Callback):
    """Writes ``samples/step_XXXXX.mid`` after each validation: a short plain multinomial sample.

    This is deliberately the simplest possible decoder (full recompute, temperature 1); the real
    sampler with KV cache and filters lives in ``aurl.generation``, which training must not import.
    """

    def __init__(
        self, out_dir: Path, tokenizer, num_tokens: int, num_samples: int, seed: int
    ) -> None:
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.num_tokens = num_tokens
        self.num_samples = num_samples
        self.seed = seed

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.num_samples <= 0:
            return
        from aurl.data.midi_io import save_score

        gen = torch.Generator(device="cpu").manual_seed(self.seed + trainer.global_step)
        for k in range(self.num_samples):
            if hasattr(pl_module, "sample_ids"):  # VAE modules decode a prior sample instead
                ids = pl_module.sample_ids(gen, self.num_tokens)
            else:
                ids = sample_tokens(
                    pl_module.model,
                    self.tokenizer.bos_id,
                    self.num_tokens,
                    gen,
                    eos_id=self.tokenizer.eos_id,
                    max_context=pl_module.max_seq_len,
                )
            suffix = "" if self.num_samples == 1 else f"_{k}"
            path = self.out_dir / f"step_{trainer.global_step:05d}{suffix}.mid"
            try:
                save_score(self.tokenizer.decode(ids), path)
            except (
                Exception
            ) as exc:  # an untrained model can emit undecodable streams; never stop training for it
                log.warning(
                    "sample at step %d not written to %s: %s", trainer.global_step, path, exc
                )
            else:
                log.info("sample written: %s (%d tokens)", path, len(ids))


class SampleQuality(Callback):
    """Logs ``val/mean_overlap_area`` (and ``val/frechet_distance``) at each validation.

    Generates ``num_samples`` pieces with :func:`sample_tokens` (from BOS, ``num_tokens`` each),
    computes their musical features and compares them with the ``split`` of the prepared data
    (``aurl.evaluation.samples``; the reference features are computed once and cached on disk).
    Samples that do not decode are left out; fewer than 2 pieces logs nothing.
    """

    def __init__(
        self, data_dir: Path, tokenizer, num_samples: int, num_tokens: int, seed: int,
        split: str = "val",
    ) -> None:  # fmt: skip
        self.data_dir = Path(data_dir)
        self.tokenizer = tokenizer
        self.num_samples = num_samples
        self.num_tokens = num_tokens
        self.seed = seed
        self.split = split
        self._reference = None

    def _reference_table(self, names: list[str]):
        from aurl.evaluation.samples import reference_table

        if self._reference is None:
            try:
                self._reference, _ = reference_table(self.data_dir, self.split, names)
            except ValueError:  # an empty split
                self._reference = None
            if self._reference is None or len(self._reference) < 2:
                log.info("%s split too small for the overlap area; using train", self.split)
                self._reference, _ = reference_table(self.data_dir, "train", names)
        return self._reference

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.num_samples <= 0:
            return
        from aurl.evaluation.features import piece_from_score
        from aurl.evaluation.samples import compare_tables, feature_table, registered_features

        t0 = time.perf_counter()
        gen = torch.Generator(device="cpu").manual_seed(self.seed + 7919 + trainer.global_step)
        pieces = []
        if hasattr(pl_module, "sample_ids"):  # VAE modules decode a prior sample instead
            rows = [pl_module.sample_ids(gen, self.num_tokens) for _ in range(self.num_samples)]
        else:
            rows = sample_tokens_batch(
                pl_module.model, self.tokenizer.bos_id, self.num_tokens, gen, self.num_samples,
                eos_id=self.tokenizer.eos_id, max_context=pl_module.max_seq_len,
            )  # fmt: skip
        for k, ids in enumerate(rows):
            try:
                piece = piece_from_score(self.tokenizer.decode(ids), name=f"sample_{k}")
            except Exception as exc:  # an untrained model can emit undecodable streams
                log.warning(
                    "eval sample %d at step %d not decoded: %s", k, trainer.global_step, exc
                )
                continue
            if len(piece.onset):
                pieces.append(piece)
        if len(pieces) < 2:
            log.warning("step %d: %d decodable samples, no overlap area logged",
                        trainer.global_step, len(pieces))  # fmt: skip
            return
        specs = registered_features()
        names = list(specs)
        result = compare_tables(feature_table(pieces, names), self._reference_table(names), specs)
        pl_module.log("val/mean_overlap_area", result["mean_overlap_area"], sync_dist=False)
        pl_module.log("val/frechet_distance", result["frechet_distance"], sync_dist=False)
        log.info(
            "step %d: %d samples, mean overlap area %.3f, Frechet %.2f (%.1f s)",
            trainer.global_step, len(pieces), result["mean_overlap_area"],
            result["frechet_distance"], time.perf_counter() - t0,
        )  # fmt: skip


@torch.no_grad()
def sample_tokens(
    model: torch.nn.Module,
    bos_id: int,
    num_tokens: int,
    generator: torch.Generator,
    *,
    eos_id: int | None = None,
    max_context: int = 1024,
) -> list[int]:
    """Plain ancestral sampling from ``BOS`` (recomputes the window each step; for monitoring only)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = [bos_id]
    try:
        for _ in range(num_tokens):
            x = torch.tensor([ids[-max_context:]], device=device)  # (1, T)
            logits = model(x).logits[0, -1].float()  # (V,)
            probs = torch.softmax(logits, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
            ids.append(nxt)
            if nxt == eos_id:
                break
    finally:
        model.train(was_training)
    return ids


@torch.no_grad()
def sample_tokens_batch(
    model: torch.nn.Module,
    bos_id: int,
    num_tokens: int,
    generator: torch.Generator,
    num: int,
    *,
    eos_id: int | None = None,
    max_context: int = 1024,
) -> list[list[int]]:
    """``num`` rows of :func:`sample_tokens` in one batch; a row is cut after its first EOS.

    With a model that has ``new_cache`` (MusicTransformer) and a piece that fits its context, each
    step feeds only the new token through the model's KV cache (the model contract of
    ``aurl.models``); otherwise the window is recomputed every step. Full recompute made one
    validation with 8 x 256 tokens of the shipped model take 263 CPU s (BENCHMARKS.md).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.full((num, 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
    done = torch.zeros(num, dtype=torch.bool)
    cache = None
    if hasattr(model, "new_cache") and num_tokens + 1 <= max_context:
        cache = model.new_cache(num, num_tokens + 1)
    try:
        for _ in range(num_tokens):
            if cache is None:
                logits = model(ids[:, -max_context:]).logits[:, -1].float()  # (B, V)
            else:  # the cache holds every earlier position: feed the newest token only
                step = ids if cache.length == 0 else ids[:, -1:]
                logits = model(step, cache=cache, logits_for="last").logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            ids = torch.cat([ids, nxt.to(device)], dim=1)  # (B, T+1)
            if eos_id is not None:
                done |= nxt[:, 0] == eos_id
                if bool(done.all()):
                    break
    finally:
        model.train(was_training)
    rows = []
    for row in ids.tolist():
        if eos_id is not None and eos_id in row[1:]:
            row = row[: row.index(eos_id, 1) + 1]
        rows.append(row)
    return rows


class StepProgressBar(TQDMProgressBar):
    """TQDM bar counting optimizer steps toward ``max_steps`` (so it shows a real ETA on resume too).

    Lightning's default bar counts batches of the current epoch; our training loader is endless
    (windows are drawn by index = f(step)), so its total would be unknown.
    """

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.set_description("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if trainer.global_step != bar.n and (
            trainer.global_step % self.refresh_rate == 0 or trainer.global_step >= trainer.max_steps
        ):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()


class StepSWA(WeightAveraging):
    """Stochastic weight averaging by optimizer step, from ``start_step`` on (equal weights).

    Lightning's ``StochasticWeightAveraging`` counts epochs, and our training loader is one endless
    epoch; ``WeightAveraging`` updates per step. Validation, checkpoints' ``state_dict`` and the
    final export use the averaged weights; resume restores both (Izmailov et al. 2018).
    """

    def __init__(self, start_step: int) -> None:
        super().__init__()
        self.start_step = start_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step
