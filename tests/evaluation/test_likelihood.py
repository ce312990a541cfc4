"""Held-out likelihood: figures agree with each other, with the data, and a trained model wins."""

from __future__ import annotations

import math

import pytest
import torch

from aurl.bundle import load_bundle, save_bundle
from aurl.data.dataset import PreparedData
from aurl.evaluation.likelihood import evaluate, summarize
from aurl.models import build_model


def test_summarize_derives_bits_and_perplexity_from_nats():
    r = summarize(
        total_nll=20.0,
        tokens=10,
        notes=4,
        pieces=1,
        by_type={"pitch": (6, 15.0), "time": (4, 5.0), "bar/position": (0, 0.0)},
    )
    assert r["nll_per_token"] == 2.0
    assert r["bits_per_token"] == pytest.approx(2.0 / math.log(2))
    assert r["perplexity"] == pytest.approx(math.exp(2.0))
    assert r["bits_per_note"] == pytest.approx(20.0 / math.log(2) / 4)
    assert r["by_type"] == {
        "pitch": {"tokens": 6, "nll_per_token": 2.5},
        "time": {"tokens": 4, "nll_per_token": 1.25},
    }
    with pytest.raises(ValueError, match="empty"):
        summarize(0.0, 0, 0, 0, {})


def test_every_token_is_counted_once_and_figures_are_consistent(tiny_run, tiny_data, tmp_path):
    r = evaluate(tiny_run, tiny_data, json_path=tmp_path / "e.json")
    split = PreparedData(tiny_data).split("test")
    assert r["tokens"] == split.num_tokens - len(split)  # every token but each piece's BOS
    assert r["notes"] == split.num_notes and r["pieces"] == len(split) == 1
    assert r["bits_per_token"] == pytest.approx(r["nll_per_token"] / math.log(2))
    assert r["bits_per_note"] == pytest.approx(
        r["nll_per_token"] * r["tokens"] / math.log(2) / r["notes"]
    )
    assert sum(t["tokens"] for t in r["by_type"].values()) == r["tokens"]
    weighted = sum(t["tokens"] * t["nll_per_token"] for t in r["by_type"].values()) / r["tokens"]
    assert weighted == pytest.approx(r["nll_per_token"])
    assert {"pitch", "time", "velocity"} <= set(r["by_type"])
    assert (tmp_path / "e.json").is_file()


def test_batching_and_padding_do_not_change_the_result(tiny_run, tiny_data):
    a = evaluate(tiny_run, tiny_data, batch_size=4)
    b = evaluate(tiny_run, tiny_data, batch_size=7)
    assert a["tokens"] == b["tokens"]
    assert a["nll_per_token"] == pytest.approx(b["nll_per_token"], rel=1e-5)


def test_trained_model_beats_an_untrained_one(tiny_run, tiny_data, tmp_path):
    trained = load_bundle(tiny_run)
    torch.manual_seed(0)
    fresh = build_model(trained.config.model)
    save_bundle(tmp_path / "untrained", fresh, trained.config, trained.tokenizer)
    before = evaluate(tmp_path / "untrained", tiny_data)
    after = evaluate(tiny_run, tiny_data)
    # untrained ~ uniform over the vocabulary: log(V) nats per token
    assert before["nll_per_token"] == pytest.approx(
        math.log(trained.tokenizer.vocab_size), rel=0.05
    )
    # 20 steps of the tiny config: measured 40.0 vs 48.9 bits per note
    assert after["bits_per_note"] < 0.9 * before["bits_per_note"]


def test_data_from_another_tokenizer_is_refused(tiny_run, tmp_path, test_midi_dir):
    from aurl.config import TokenizerConfig
    from aurl.data.prepare import prepare

    other = tmp_path / "remi"
    prepare(str(test_midi_dir), other, TokenizerConfig(kind="remi"), splits=(0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match="prepare the data with the model's tokenizer"):
        evaluate(tiny_run, other)
