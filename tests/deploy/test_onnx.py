"""ONNX export: both graphs agree with the torch model, generate the same tokens, and load through
``load_bundle`` for generate / evaluate / serve; INT8 shrinks the graphs and stays close."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))

from tinymodel import make_bundle

from aurl.bundle import load_bundle
from aurl.cli import main
from aurl.deploy.onnx_export import DECODE_FILE, PREFILL_FILE, WEIGHTS_FILE, export_onnx
from aurl.deploy.onnx_model import OnnxLM
from aurl.generation.pipeline import plan_generation
from aurl.generation.sample import sample


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    # weights at a trained model's scale: bach_small's block matrices have std 0.012-0.026, while
    # the default small init at d_model 32 would be 0.11, and int8 error grows with weight scale
    src = make_bundle(root / "torch", init_std=0.02)
    assert main(["export", str(src), "--format", "onnx", "--out", str(root / "fp32")]) == 0
    export_onnx(src, root / "int8", quantize="int8")
    return load_bundle(src), load_bundle(root / "fp32"), load_bundle(root / "int8"), root


def test_prefill_and_cached_decode_match_torch(exported):
    torch_b, onnx_b, _, _ = exported
    assert isinstance(onnx_b.model, OnnxLM)
    x = torch.randint(1, torch_b.tokenizer.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(onnx_b.model(x).logits, torch_b.model(x).logits, atol=1e-4, rtol=1e-4)  # fmt: skip
    kt, ko = torch_b.model.new_cache(2, 64), onnx_b.model.new_cache(2, 64)
    torch_b.model(x[:, :12], cache=kt)
    onnx_b.model(x[:, :12], cache=ko)
    for i in range(12, 20):
        a = torch_b.model(x[:, i : i + 1], cache=kt, logits_for="last").logits
        b = onnx_b.model(x[:, i : i + 1], cache=ko, logits_for="last").logits
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert ko.length == kt.length == 20


def test_onnx_generates_the_torch_tokens_past_the_context(exported):
    torch_b, onnx_b, _, _ = exported
    out = []
    for b in (torch_b, onnx_b):
        plan = plan_generation(b, tokens=90, seed=4)  # context 64: the cache slides
        out.append(sample(b.model, plan.prompt_ids, num=2, rule=plan.rule, filters=plan.filters,
                          constraints=plan.new_constraints(), seeds=[4, 5]))  # fmt: skip
    assert out[0] == out[1] and len(out[0][0]) == 90


def test_int8_is_smaller_and_close(exported):
    torch_b, _onnx_b, int8_b, root = exported
    size = lambda d: sum((d / f).stat().st_size for f in (PREFILL_FILE, DECODE_FILE, WEIGHTS_FILE))  # noqa: E731
    assert size(root / "int8") < 0.75 * size(root / "fp32")  # tiny: graph overhead dominates
    # the two graphs share one copy of the weights (not one each); the tied output matrix is
    # stored a second time, transposed for MatMul, by the exporter
    params = sum(p.numel() for p in torch_b.model.parameters())
    tied = torch_b.model.tok_emb.weight.numel()
    assert 4 * params < (root / "fp32" / WEIGHTS_FILE).stat().st_size <= 4 * (params + tied)
    x = torch.randint(1, torch_b.tokenizer.vocab_size, (1, 30), generator=torch.Generator().manual_seed(1))  # fmt: skip
    with torch.no_grad():  # sampling above grew the rotary tables in inference mode
        ref = torch.log_softmax(torch_b.model(x).logits, -1)
        q = torch.log_softmax(int8_b.model(x).logits, -1)
    assert (q - ref).abs().mean() < 0.05  # random tiny weights; bach_small's figures: BENCHMARKS.md


def test_cli_generate_evaluate_and_export_errors(exported, tmp_path, tiny_data):
    _, _, _, root = exported
    assert main(["generate", "--model", str(root / "int8"), "--out", str(tmp_path / "g"), "--num", "1", "--tokens", "16", "--no-wav"]) == 0  # fmt: skip
    assert (tmp_path / "g" / "piece_00.mid").read_bytes()[:4] == b"MThd"
    assert main(["evaluate", str(root / "fp32"), "--data", str(tiny_data), "--split", "test", "--json", str(tmp_path / "e.json")]) == 0  # fmt: skip
    assert main(["export", str(root / "torch"), "--quantize", "int8", "--out", str(tmp_path / "x")]) == 2  # fmt: skip


def test_continuous_batching_on_the_onnx_decode_graph_matches_single_runs(exported):
    import time as _time

    from aurl.serving.scheduler import Job, Scheduler

    _, onnx_b, _, _ = exported
    options = [{"tokens": 30, "seed": 1}, {"tokens": 80, "seed": 2, "top_k": 10}, {"bars": 1, "seed": 3}]  # fmt: skip
    expected = []
    for o in options:
        plan = plan_generation(onnx_b, **o)
        expected.append(sample(onnx_b.model, plan.prompt_ids, num=1, rule=plan.rule, filters=plan.filters,
                               constraints=plan.new_constraints(), seeds=[o["seed"]])[0])  # fmt: skip
    sched = Scheduler(onnx_b.model, max_batch=2)
    assert sched.batching
    jobs = [Job(plan_generation(onnx_b, **o), o["seed"], _time.monotonic() + 60) for o in options]
    sched.start()
    try:
        for j in jobs:
            sched.submit(j)
        assert all(j.done.wait(60) for j in jobs)
    finally:
        sched.stop()
    assert [j.new for j in jobs] == expected
