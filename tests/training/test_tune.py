"""`aurl tune`: trials train for real on tiny data, the study resumes, the table is written."""

from __future__ import annotations

from pathlib import Path

import optuna

from aurl.cli import main
from aurl.training import tune

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def test_tune_runs_trials_and_resumes_an_interrupted_search(tiny_data, tmp_path, capsys):
    out = tmp_path / "search"
    args = ["tune", "--config", str(TINY), "--data", str(tiny_data), "--out", str(out),
            "--minutes-per-trial", "0", "--steps-per-trial", "10", "trainer.val_every_steps=5"]  # fmt: skip
    assert main([*args, "--trials", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| trial | state | val_loss |" in printed
    study = optuna.load_study(study_name="aurl", storage=f"sqlite:///{out / 'study.db'}")
    first = [(t.number, t.params) for t in study.trials]
    assert len(first) == 2 and all(t.value is not None for t in study.trials)
    assert (out / "trial_000" / "model" / "model.safetensors").is_file()

    study.ask()  # a trial left running, as by a search killed mid-trial
    assert main([*args, "--trials", "3"]) == 0
    study = optuna.load_study(study_name="aurl", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    assert states[2] == optuna.trial.TrialState.FAIL  # the interrupted one
    assert [(t.number, t.params) for t in study.trials[:2]] == first  # finished trials kept
    assert sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
               for s in states) == 3  # fmt: skip
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,val_loss,last_step,optim.lr") and len(rows) == 5
    complete = [r.split(",") for r in rows[1:] if r.split(",")[1] == "complete"]
    assert complete and all(r[3] == "10" for r in complete)  # the step budget, not a clock


def test_bad_override_fails_before_any_trial(tiny_data, tmp_path):
    try:
        tune.tune(TINY, tiny_data, tmp_path / "s", trials=1, minutes_per_trial=1,
                  overrides=["optim.nope=1"])  # fmt: skip
    except ValueError as err:
        assert "optim.nope" in str(err)
    else:
        raise AssertionError("an unknown key must be refused")
    assert not (tmp_path / "s" / "trial_000").exists()
