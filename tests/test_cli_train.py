"""`aurl train` / `aurl evaluate` / `aurl export` end to end, and surviving a SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aurl.cli import main
from aurl.training.checkpoint_io import load_plain

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def test_train_writes_the_run_layout(tiny_run):
    for rel in ("config.yaml", "tokenizer.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                "model/model.safetensors", "model/config.yaml", "model/tokenizer.json", "summary.txt",
                "logs/csv/session_0/metrics.csv"):  # fmt: skip
        assert (tiny_run / rel).is_file(), rel
    assert sorted(p.name for p in (tiny_run / "samples").glob("*.mid")) == [
        "step_00010.mid",
        "step_00020.mid",
    ]
    assert load_plain(tiny_run / "checkpoints" / "last.ckpt")["global_step"] == 20
    assert "steps      20 / 20" in (tiny_run / "summary.txt").read_text()
    metrics = (tiny_run / "logs" / "csv" / "session_0" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics and "perf/tokens_per_s" in metrics


def test_evaluate_cli_writes_json(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(tiny_run), "--data", str(tiny_data), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures == json.loads(capsys.readouterr().out)
    assert figures["split"] == "test" and figures["pieces"] == 1 and figures["bits_per_note"] > 0


def test_export_cli_writes_a_loadable_bundle(tiny_run, tmp_path):
    from aurl.bundle import load_bundle

    assert (
        main(["export", str(tiny_run), "--out", str(tmp_path / "m"), "--checkpoint", "last"]) == 0
    )
    assert "parameters" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert load_bundle(tmp_path / "m").config.name == "tiny"


def test_export_average_writes_the_mean_of_the_kept_checkpoints(tiny_run, tmp_path):
    import torch

    from aurl.bundle import load_bundle, load_checkpoint_model

    kept = sorted((tiny_run / "checkpoints").glob("step-*.ckpt"))
    assert [p.name for p in kept] == ["step-000010.ckpt", "step-000020.ckpt"]
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "avg"), "--average", "2"]) == 0
    averaged = load_bundle(tmp_path / "avg").model.state_dict()
    a, b = (load_checkpoint_model(p).model.state_dict() for p in kept)
    name = "blocks.0.mlp.up.weight" if "blocks.0.mlp.up.weight" in a else next(iter(a))
    assert not torch.equal(a[name], b[name])
    assert torch.allclose(averaged[name], (a[name] + b[name]) / 2, atol=1e-6)
    card = (tmp_path / "avg" / "MODEL_CARD.md").read_text()
    assert "averaged vs" in card and "step-000020.ckpt alone" in card


def test_export_average_asks_for_kept_checkpoints(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "x"), "--average", "5"]) == 2
    assert "trainer.keep_checkpoints=5" in capsys.readouterr().err


def test_train_records_the_corpus_generation_defaults(tiny_run):
    from aurl.config import load_config

    sample = load_config(tiny_run / "config.yaml").sample
    assert sample.max_note_beats > 0 and sample.max_polyphony >= 1 and sample.programs
    assert sample.release_after_beats > 0 and sample.bpm > 0


def test_train_refuses_to_overwrite_an_existing_run(tiny_run, tiny_data, capsys):
    code = main(["train", "--config", str(TINY), "--data", str(tiny_data), "--out", str(tiny_run)])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_config_value_is_a_clear_error(tiny_data, tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            str(TINY),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "r"),
            "optim.lr=-1",
        ]
    )
    assert code == 2
    assert "optim.lr=-1" in capsys.readouterr().err


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    # Far more steps than the kill needs: a tiny model trains ~100 steps/s, and with 40 steps the
    # run sometimes finished before the kill landed (flaky killed_at == 40).
    total = 300
    last = run_dir / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, "-m", "aurl.cli", "train", "--config", str(TINY), "--data", str(tiny_data),
           "--out", str(run_dir), f"trainer.max_steps={total}", "trainer.checkpoint_every_steps=5",
           "trainer.val_every_steps=1000", "trainer.samples_per_validation=0",
           "trainer.keep_checkpoints=0"]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 90
        while not last.exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"train exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 90 s")
            time.sleep(0.05)
        time.sleep(0.2)  # let it run past the checkpoint into the next interval
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_plain(last)["global_step"]
    assert killed_at > 0 and killed_at % 5 == 0 and killed_at < total
    assert load_plain(last)[
        "state_dict"
    ]  # a kill mid-write leaves at most a temp file, never a broken ckpt

    resumed = subprocess.run(
        [sys.executable, "-m", "aurl.cli", "train", "--resume", str(run_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stderr
    assert load_plain(last)["global_step"] == total
    # the resumed session only ran the remaining steps: its first logged step follows the checkpoint
    with open(run_dir / "logs" / "csv" / "session_1" / "metrics.csv") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh)]
    assert steps and min(steps) >= killed_at and max(steps) <= total
