"""``aurl train``: a Lightning Trainer from the config, checkpoints, exact resume, export.

Run directory layout::

    RUN/config.yaml            resolved config (model.vocab_size filled in), written at start
    RUN/tokenizer.json         the prepared data's tokenizer (so the run is self-contained)
    RUN/checkpoints/last.ckpt  every trainer.checkpoint_every_steps and at the end (atomic)
    RUN/checkpoints/best.ckpt  lowest val/loss so far (atomic)
    RUN/logs/tensorboard       TensorBoard events (appended across sessions)
    RUN/logs/csv/session_N/    metrics.csv of the N-th session (0 = first run, then resumes)
    RUN/samples/step_XXXXX.mid a short sample at each validation
    RUN/model/                 inference bundle exported at the end (aurl.bundle)
    RUN/summary.txt            steps, wall time, best val loss, paths

Exact resume: Lightning restores weights, optimizer, scheduler, loop counters and callback states
from ``last.ckpt``; the module adds the RNG states. Training windows are drawn by index from a
map-style dataset whose item ``i`` is a pure function of ``(seed, i)``, and the index of every
window is a function of the global step (``StepSampler``), so a resumed run draws exactly the
windows the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset, Sampler

from aurl.config import RunConfig, SampleConfig, load_config, save_config, to_dict
from aurl.training.callbacks import (
    SampleQuality,
    SampleWriter,
    StepProgressBar,
    StepSWA,
    ThroughputMonitor,
)
from aurl.training.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# resolution of "auto" settings (pure)


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bf16 matrix instructions (Intel AMX: ``amx_bf16`` in /proc/cpuinfo).

    FACTS.md measured a 2048² matmul at ~850 GFLOP/s in bf16 against ~204 in fp32 on such a CPU,
    and 59 against 303 on one without (AVX2/AVX-512 without bf16 units emulate it: 5× slower).
    ``avx512_bf16`` alone (dot products, no tiles) is not counted: no measurement here showed it
    faster than fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell, keep fp32
            return False
    return any(
        "amx_bf16" in line.split() for line in cpuinfo.splitlines() if line.startswith("flags")
    )


def resolve_precision(
    precision: str, cuda: bool | None = None, bf16: bool | None = None, cpu_bf16: bool | None = None
) -> str:
    """``auto`` -> ``bf16-mixed`` on a CUDA device with bf16 support (else ``16-mixed``); on a
    CPU ``bf16-mixed`` only where bf16 matmul is faster than fp32 (:func:`cpu_has_fast_bf16`),
    else ``32-true``. Any other string is passed to Lightning unchanged (it validates it).

    The quality side: bf16 autocast keeps the weights and the optimizer in fp32; after 4 steps
    the loss matched fp32 to 3 decimals (5.980 vs 5.981, benchmarks/results/train.md)."""
    if precision != "auto":
        return precision
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        cpu_bf16 = cpu_has_fast_bf16() if cpu_bf16 is None else cpu_bf16
        return "bf16-mixed" if cpu_bf16 else "32-true"
    bf16 = torch.cuda.is_bf16_supported() if bf16 is None else bf16
    return "bf16-mixed" if bf16 else "16-mixed"


def resolve_compile(setting: str, cuda: bool | None = None) -> bool:
    """``auto`` compiles on CUDA only: on CPU it bought ~7 % after a 37 s compile (FACTS.md)."""
    if setting == "auto":
        return torch.cuda.is_available() if cuda is None else cuda
    return setting == "on"


# ---------------------------------------------------------------------------------------------
# data position as a function of the step


class StepSampler(Sampler[int]):
    """Endless indices; micro-batch ``m`` of rank ``r`` takes ``(m * world + r) * B + b``.

    Iteration starts at micro-batch ``start_fn()`` (read when an epoch starts, i.e. after Lightning
    restored the global step on resume), so data position = f(global step) on every rank.
    """

    def __init__(self, batch_size: int, start_fn: Callable[[], int], rank: int = 0, world: int = 1):
        self.batch_size, self.start_fn, self.rank, self.world = batch_size, start_fn, rank, world

    def __iter__(self) -> Iterator[int]:
        m = self.start_fn()
        B = self.batch_size
        while True:
            base = (m * self.world + self.rank) * B
            yield from range(base, base + B)
            m += 1


class StepData(pl.LightningDataModule):
    """Loaders built inside each process (ranks known, global step restored).

    ``train`` is a Dataset or a factory ``group -> Dataset`` (group = windows per optimizer step
    over all ranks), called in ``setup`` where the world size is known.
    """

    def __init__(
        self, train: Dataset | Callable[[int], Dataset], val_ds: Dataset, cfg: RunConfig
    ) -> None:
        super().__init__()
        self.train, self.val_ds = train, val_ds
        self.train_ds: Dataset | None = None
        self.batch_size, self.accumulate = cfg.optim.batch_size, cfg.optim.accumulate
        self.num_workers, self.seed = cfg.data.num_workers, cfg.trainer.seed

    def setup(self, stage: str) -> None:
        if self.train_ds is None:
            group = self.batch_size * self.trainer.world_size * self.accumulate
            self.train_ds = self.train(group) if callable(self.train) else self.train

    def _start(self) -> int:  # micro-batch index where this rank's data stream starts
        return self.trainer.global_step * self.accumulate

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        return DataLoader(
            self.train_ds,
            batch_size=self.batch_size,
            sampler=StepSampler(
                self.batch_size, self._start, rank=t.global_rank, world=t.world_size
            ),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=True,
            # Own generators: a DataLoader without one draws its worker base seed from the global
            # RNG each time an iterator starts, which would shift dropout masks after a resume.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_ds, batch_size=self.batch_size, shuffle=False,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip


class _RNGState(Callback):
    """Saves and restores torch/numpy/python RNG states (plain values, weights_only-safe)."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [
                np_state[0],
                torch.from_numpy(np_state[1].astype(np.int64)),
                *map(float, np_state[2:]),
            ],
            "python": list(random.getstate()[1]),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
        random.setstate((3, tuple(int(x) for x in state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class _FinalCheckpoint(Callback):
    """``last.ckpt`` at the very end too (max_steps is rarely a multiple of the interval)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state, for resume


# ---------------------------------------------------------------------------------------------
# data


def open_data(cfg: RunConfig):
    """The prepared data named by ``cfg.data.path``.

    Returns ``(tokenizer, make_train, val_ds)``: ``make_train(group)`` builds the training windows
    once the number of windows per optimizer step (batch x ranks x accumulation) is known, so the
    curriculum length of window ``i`` is that of step ``i // group`` on every rank; ``val_ds`` is a
    fixed set of ``val_batches x batch_size`` seeded windows of the val split.
    """
    if cfg.model.mode in ("vae", "vae_gan"):  # bar-aligned segments, not LM windows
        from aurl.training.vae_module import open_segment_data

        return open_segment_data(cfg)
    from aurl.data import dataset

    d, t = cfg.data, cfg.trainer
    data = dataset.PreparedData(d.path)
    tokenizer = data.tokenizer
    train_split = data.split("train")
    augment = dataset.Augment(
        transpose=d.transpose, velocity_bins=round(d.velocity_jitter * cfg.tokenizer.num_velocities)
    )
    if d.time_stretch:
        log.warning(
            "data.time_stretch=%s is not applied at token level; prepare stretched data instead",
            d.time_stretch,
        )
    curriculum = dataset.linear_curriculum(d.curriculum_start, d.seq_len, d.curriculum_steps)

    def make_train(group: int) -> Dataset:
        return dataset.WindowDataset(
            train_split, d.seq_len, tokenizer=tokenizer, seed=t.seed, batch_size=group,
            curriculum=curriculum, augment=augment,
        )  # fmt: skip

    val_split = data.split("val") if len(data.split("val")) else train_split
    if val_split is train_split:
        log.warning("%s: empty val split; validating on training windows", d.path)
    val_ds = dataset.WindowDataset(
        val_split, d.seq_len, seed=t.seed + 1, size=max(1, t.val_batches) * cfg.optim.batch_size
    )
    return tokenizer, make_train, val_ds


# ---------------------------------------------------------------------------------------------
# train / resume


def train(cfg: RunConfig, out: Path, callbacks: list[Callback] | None = None) -> Path:
    """Train a new run into ``out`` and return the run directory (``callbacks`` are added to the
    run's own; ``aurl tune`` passes its pruning callback)."""
    run_dir = Path(out)
    if (run_dir / CHECKPOINT_DIR / "last.ckpt").exists():
        raise ValueError(
            f"{run_dir} already holds a run (checkpoints/last.ckpt); continue it with "
            f"`aurl train --resume {run_dir}` or choose another --out"
        )
    tokenizer, train_ds, val_ds = open_data(cfg)
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size),
        sample=corpus_sample_defaults(cfg, tokenizer),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    tokenizer.save(run_dir)
    return fit(cfg, run_dir, tokenizer, train_ds, val_ds, callbacks=callbacks)


def corpus_sample_defaults(cfg: RunConfig, tokenizer) -> SampleConfig:
    """``cfg.sample`` with the generation defaults that were left unset (0 / empty) measured on
    the train split: longest note, voice limit, dominant programs (issue 15)."""
    s = cfg.sample
    if s.max_note_beats and s.release_after_beats and s.max_polyphony and s.programs and s.bpm:
        return s
    from aurl.data.dataset import PreparedData
    from aurl.generation.corpus_stats import measure, median_tempo
    from aurl.generation.state import Vocab

    data = PreparedData(cfg.data.path)
    split = data.split("train")
    stats = measure((split.piece(i) for i in range(len(split))), Vocab.from_tokenizer(tokenizer))
    root = Path(data.manifest.get("root") or "")
    bpm = s.bpm or median_tempo(root / name for name in split.names) or 0.0
    log.info(
        "generation defaults from the train split: %s; tempo %s", stats.render(), bpm or "unknown"
    )
    return dataclasses.replace(
        s,
        max_note_beats=s.max_note_beats or stats.max_note_beats,
        release_after_beats=s.release_after_beats or stats.note_beats_p999,
        bpm=bpm,
        max_polyphony=s.max_polyphony or stats.max_polyphony,
        programs=s.programs or stats.programs,
    )


def resume(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Continue ``run_dir`` from ``checkpoints/last.ckpt`` (overrides such as trainer.max_steps=N)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"{ckpt}: nothing to resume from; start the run with `aurl train --out {run_dir}`"
        )
    cfg = load_config(run_dir / CONFIG_FILE, overrides)
    tokenizer, train_ds, val_ds = open_data(cfg)
    if overrides:
        save_config(cfg, run_dir / CONFIG_FILE)
    return fit(cfg, run_dir, tokenizer, train_ds, val_ds, ckpt_path=ckpt)


def make_module(cfg: RunConfig, vocab_size: int) -> pl.LightningModule:
    """LMModule for transformer mode, VAEModule for vae / vae_gan (same constructor)."""
    if cfg.model.mode in ("vae", "vae_gan"):
        from aurl.training.vae_module import VAEModule

        return VAEModule(cfg, vocab_size)
    from aurl.training.module import LMModule

    return LMModule(cfg, vocab_size)


def _csv_session(run_dir: Path) -> str:
    """``session_N`` for the N-th training session of this run (0 = the first, then resumes)."""
    csv_dir = run_dir / "logs" / "csv"
    return f"session_{len(list(csv_dir.glob('session_*'))) if csv_dir.is_dir() else 0}"


def build_trainer(cfg: RunConfig, run_dir: Path, tokenizer) -> pl.Trainer:
    """The Lightning Trainer described by ``cfg.trainer`` and ``cfg.optim``."""
    t, o = cfg.trainer, cfg.optim
    ckpt_dir = run_dir / CHECKPOINT_DIR
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
            every_n_train_steps=t.checkpoint_every_steps, enable_version_counter=False,
        ),
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
            enable_version_counter=False, auto_insert_metric_name=False,
        ),
        *([ModelCheckpoint(
            dirpath=ckpt_dir, filename="step-{step:06d}", monitor="step", mode="max",
            save_top_k=t.keep_checkpoints, every_n_train_steps=t.checkpoint_every_steps,
            auto_insert_metric_name=False, enable_version_counter=False,
        )] if t.keep_checkpoints else []),  # the last K, for `aurl export --average K`
        _FinalCheckpoint(ckpt_dir / "last.ckpt"),
        _RNGState(),
        ThroughputMonitor(t.log_every_steps),
        SampleWriter(run_dir / "samples", tokenizer, t.sample_tokens, t.samples_per_validation, t.seed),
        StepProgressBar(refresh_rate=max(1, t.log_every_steps)),
    ]  # fmt: skip
    if t.eval_samples > 0:
        callbacks.append(SampleQuality(
            Path(cfg.data.path), tokenizer, t.eval_samples, t.sample_tokens, t.seed
        ))  # fmt: skip
    if t.early_stopping_patience > 0:
        callbacks.append(
            EarlyStopping(monitor="val/loss", mode="min", patience=t.early_stopping_patience)
        )
    if t.swa:
        # Average the last quarter of training. After _FinalCheckpoint: the final save must happen
        # before SWA's on_train_end copies the average over the live weights, so that last.ckpt
        # keeps both (state_dict = average, current_model_state = live) and resumes exactly.
        callbacks.insert(3, StepSWA(start_step=int(0.75 * t.max_steps)))
    loggers = [
        TensorBoardLogger(
            save_dir=run_dir / "logs", name="tensorboard", version="", default_hp_metric=False
        ),
        # One CSV folder per session: Lightning's CSV writer replaces an existing metrics.csv.
        CSVLogger(save_dir=run_dir / "logs", name="csv", version=_csv_session(run_dir)),
    ]
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=resolve_precision(t.precision),
        max_steps=t.max_steps,
        max_time=timedelta(minutes=t.max_time_minutes) if t.max_time_minutes > 0 else None,
        # val_check_interval counts batches; with accumulation a step is `accumulate` batches
        val_check_interval=t.val_every_steps * o.accumulate,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches,
        num_sanity_val_steps=0,
        # vae_gan optimizes manually (two optimizers): it clips itself and Lightning refuses both
        accumulate_grad_batches=o.accumulate if cfg.model.mode != "vae_gan" else 1,
        gradient_clip_val=o.grad_clip if o.grad_clip > 0 and cfg.model.mode != "vae_gan" else None,
        callbacks=callbacks,
        logger=loggers,
        log_every_n_steps=t.log_every_steps,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # StepSampler shards by rank itself
        default_root_dir=run_dir,
        enable_model_summary=False,
    )


def fit(
    cfg: RunConfig,
    run_dir: Path,
    tokenizer,
    train_ds: Dataset | Callable[[int], Dataset],
    val_ds: Dataset,
    ckpt_path: Path | None = None,
    callbacks: list[Callback] | None = None,
) -> Path:
    """Train ``make_module(cfg)`` on the given datasets in ``run_dir``; export and summarize.

    ``callbacks`` are appended to the run's own (tests use them to interrupt a run).
    """
    t0 = time.perf_counter()
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = make_module(cfg, tokenizer.vocab_size)
    if resolve_compile(cfg.trainer.compile):
        module.model.compile()  # in place: state_dict keys stay unprefixed
    trainer = build_trainer(cfg, run_dir, tokenizer)
    trainer.callbacks.extend(callbacks or [])
    data = StepData(train_ds, val_ds, cfg)
    for lg in trainer.loggers:
        lg.log_hyperparams(_flat(to_dict(cfg)))
    if ckpt_path is not None:
        log.info("resuming %s from %s", run_dir, ckpt_path)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    log.info("training stopped at step %d", trainer.global_step)
    if trainer.is_global_zero:
        _finish(cfg, run_dir, trainer, time.perf_counter() - t0)
    return run_dir


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v) if isinstance(v, list) else v
    return out


def _finish(cfg: RunConfig, run_dir: Path, trainer: pl.Trainer, wall_s: float) -> None:
    from aurl.config import atomic_write_text
    from aurl.training.export import export_run

    model_dir = export_run(run_dir, run_dir / "model", which="best")
    best = None
    for cb in trainer.checkpoint_callbacks:
        if (
            isinstance(cb, ModelCheckpoint)
            and cb.monitor == "val/loss"
            and cb.best_model_score is not None
        ):
            best = float(cb.best_model_score)
    lines = [
        f"run        {cfg.name}  ({run_dir})",
        f"steps      {trainer.global_step} / {cfg.trainer.max_steps}",
        f"wall time  {wall_s / 60:.1f} min (this session)",
        f"val loss   best {best:.4f} nats/{'note' if cfg.model.vae.decoder == 'grid' and cfg.model.mode != 'transformer' else 'token'}"
        if best is not None
        else "val loss   (no validation ran)",
        f"checkpoint {run_dir / CHECKPOINT_DIR / 'last.ckpt'}",
        f"model      {model_dir}",
        f"samples    {run_dir / 'samples'}",
        f"logs       {run_dir / 'logs'}  (tensorboard --logdir {run_dir / 'logs'})",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(run_dir / "summary.txt", text)
    for line in lines:
        log.info("%s", line)
