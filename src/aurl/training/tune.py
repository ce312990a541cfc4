"""``aurl tune``: hyperparameter search with Optuna, each trial a short ``aurl train`` run.

The study lives in ``OUT/study.db`` (SQLite), so a search that was interrupted (Ctrl-C, a crash,
the end of a session) continues where it stopped when the same command is run again: finished
trials are kept, a trial that was running is marked failed and its folder replaced. Trials are
sampled by TPE (seeded) and pruned by the median rule on the validation loss: a trial whose loss at
a validation is worse than the median of earlier trials at the same step stops early, which buys
more trials for the same wall time.

Each trial trains ``OUT/trial_NNN`` for ``minutes_per_trial`` minutes (``trainer.max_time_minutes``)
or, with ``steps_per_trial``, for that many optimizer steps (``trainer.max_steps``; the learning-rate
schedule then spans the trial, and trials stay comparable when other jobs share the cores: the first
time-budgeted search here ranked trials by how many steps the load let them make), from the base
config with the sampled overrides; its objective is the best validation loss
(nats/token; within one tokenizer, ranking by it equals ranking by bits per note).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from aurl.atomic import atomic_write_text
from aurl.config import load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a config key and its range."""

    key: str
    low: float
    high: float
    log: bool = False
    kind: str = "float"
    """float, int or bool (bool ignores low/high)."""

    def suggest(self, trial) -> object:
        if self.kind == "bool":
            return trial.suggest_categorical(self.key, [True, False])
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


DEFAULT_SPACE: tuple[Param, ...] = (
    # around the bach_small recipe (lr 1e-3, warm-up 50, dropout 0.1, wd 0.1, tied embeddings);
    # issue 15 lists these as the suspects for losing to x-transformers at equal wall time
    Param("optim.lr", 3e-4, 4e-3, log=True),
    Param("optim.warmup_steps", 10, 200, log=True, kind="int"),
    Param("model.dropout", 0.0, 0.2),
    Param("optim.weight_decay", 0.0, 0.2),
    Param("model.tie_weights", 0, 1, kind="bool"),
    Param("model.init_std", 0.01, 0.1, log=True),
)


class _Pruning(Callback):
    """Reports each validation loss to the trial; asks the trainer to stop when pruned."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.best = math.inf
        self.pruned = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        loss = float(trainer.callback_metrics["val/loss"])
        self.best = min(self.best, loss)
        self.trial.report(loss, step=trainer.global_step)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def _fail_interrupted(study) -> None:
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("trial %d was interrupted; marking it failed", t.number)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def tune(
    config: str | os.PathLike | None,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    trials: int,
    minutes_per_trial: float = 0.0,
    steps_per_trial: int = 0,
    overrides: list[str] | None = None,
    space: tuple[Param, ...] = DEFAULT_SPACE,
    seed: int = 0,
    train_fn: Callable | None = None,
) -> list[dict]:
    """Run the search until ``trials`` trials are finished (completed or pruned); returns rows
    of the trials table (also written to ``OUT/trials.csv`` and ``OUT/trials.md``)."""
    import optuna

    if trials < 1 or not (minutes_per_trial > 0 or steps_per_trial > 0):
        raise ValueError(
            f"--trials {trials} must be >= 1, with --minutes-per-trial > 0 or --steps-per-trial > 0"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = [
        *(overrides or []),
        f"data.path={data}",
        f"trainer.max_time_minutes={minutes_per_trial}",
        *([f"trainer.max_steps={steps_per_trial}"] if steps_per_trial > 0 else []),
    ]
    load_config(config, base)  # a bad config or override fails here, before any trial
    from aurl.training.run import train

    train_fn = train_fn or train
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="aurl",
        storage=f"sqlite:///{out / 'study.db'}",
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    _fail_interrupted(study)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial) -> float:
        values = {p.key: p.suggest(trial) for p in space}
        cfg = load_config(config, base + [f"{k}={v}" for k, v in values.items()])
        cfg = dataclasses.replace(cfg, name=f"trial_{trial.number:03d}")
        run_dir = out / cfg.name
        if run_dir.exists():  # left by an interrupted or failed attempt
            shutil.rmtree(run_dir)
        pruning = _Pruning(trial)
        train_fn(cfg, run_dir, callbacks=[pruning])
        trial.set_user_attr("run_dir", str(run_dir))
        if pruning.pruned:
            raise optuna.TrialPruned(f"val/loss {pruning.best:.4f} above the median")
        if not math.isfinite(pruning.best):
            budget = f"{steps_per_trial} steps" if steps_per_trial else f"{minutes_per_trial} min"
            raise RuntimeError(f"{run_dir}: no validation ran in {budget}")
        return pruning.best

    while True:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if sum(s in finished for s in states) >= trials:
            break
        if states.count(optuna.trial.TrialState.FAIL) > trials:
            raise RuntimeError(f"{out}: more than {trials} trials failed; see the log above")
        study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    rows = trial_rows(study, space)
    write_table(rows, out)
    return rows


def trial_rows(study, space: tuple[Param, ...]) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value
        if value is None and t.intermediate_values:  # pruned: its last reported loss
            value = t.intermediate_values[max(t.intermediate_values)]
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "val_loss": None if value is None else round(float(value), 4),
                "last_step": max(t.intermediate_values) if t.intermediate_values else 0,
                **{p.key: t.params.get(p.key) for p in space},
            }
        )
    return rows


def write_table(rows: list[dict], out: Path) -> None:
    """``trials.csv`` and a Markdown ``trials.md`` (best first), written atomically."""
    if not rows:
        return
    keys = list(rows[0])
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "trials.csv", buf.getvalue())
    atomic_write_text(out / "trials.md", render(rows) + "\n")


def render(rows: list[dict]) -> str:
    """The trials table, best validation loss first (completed trials before pruned ones)."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "—" if v is None else str(v)

    order = sorted(
        rows, key=lambda r: (r["state"] != "complete", r["val_loss"] is None, r["val_loss"] or 0)
    )
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in order]
    return "\n".join(lines)
