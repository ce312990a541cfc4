"""Trainer wiring: auto settings, step-indexed data, exact resume, DDP on two CPU processes."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from aurl.training import run
from aurl.training.checkpoint_io import load_plain

AMX_CPUINFO = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX512_CPUINFO = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n"


def test_cpu_bf16_only_with_amx_tiles():
    assert run.cpu_has_fast_bf16(AMX_CPUINFO) is True
    assert run.cpu_has_fast_bf16(AVX512_CPUINFO) is False  # bf16 dot products alone: not faster
    assert run.cpu_has_fast_bf16("") is False


def test_precision_auto_is_bf16_on_cuda_with_bf16_or_amx_cpu_else_fp32():
    assert run.resolve_precision("auto", cuda=False, cpu_bf16=False) == "32-true"
    assert run.resolve_precision("auto", cuda=False, cpu_bf16=True) == "bf16-mixed"
    assert run.resolve_precision("auto", cuda=True, bf16=True) == "bf16-mixed"
    assert run.resolve_precision("auto", cuda=True, bf16=False) == "16-mixed"
    assert run.resolve_precision("bf16-mixed", cuda=False) == "bf16-mixed"
    assert run.resolve_compile("auto", cuda=False) is False
    assert run.resolve_compile("auto", cuda=True) is True
    assert run.resolve_compile("on", cuda=False) is True


def test_step_sampler_position_is_a_function_of_the_step_and_rank():
    step = {"m": 0}
    s0 = run.StepSampler(2, lambda: step["m"], rank=0, world=2)
    s1 = run.StepSampler(2, lambda: step["m"], rank=1, world=2)
    it0, it1 = iter(s0), iter(s1)
    first0 = [next(it0) for _ in range(6)]
    first1 = [next(it1) for _ in range(6)]
    assert first0 == [0, 1, 4, 5, 8, 9] and first1 == [2, 3, 6, 7, 10, 11]
    step["m"] = 2  # resumed at micro-batch 2: continues where the stream was
    assert [next(iter(s0)) for _ in range(1)] == [8]


class StopAt(Callback):
    """Simulates a crash after ``step`` (no final checkpoint; only the periodic ones exist)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


def _weights(run_dir):
    return load_plain(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def test_resumed_run_matches_an_uninterrupted_run_bit_for_bit(
    tmp_path, tokenizer, tiny_config, windows
):
    cfg = tiny_config(tokenizer, "trainer.max_steps=16", "trainer.val_every_steps=8")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for d in (straight, broken):
        d.mkdir()
        tokenizer.save(d)
    run.fit(cfg, straight, tokenizer, windows(32), windows(32, length=8))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run.fit(cfg, broken, tokenizer, windows(32), windows(32, length=8), callbacks=[StopAt(7)])
    ckpt = broken / "checkpoints" / "last.ckpt"
    assert load_plain(ckpt)["global_step"] == 5  # checkpoints every 5 steps; step 6-7 lost
    run.fit(cfg, broken, tokenizer, windows(32), windows(32, length=8), ckpt_path=ckpt)
    a, b = _weights(straight), _weights(broken)
    assert load_plain(ckpt)["global_step"] == 16
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # and it did learn: the periodic pattern is far below the uniform log(V) loss
    best = load_plain(straight / "checkpoints" / "best.ckpt")
    assert (straight / "model" / "model.safetensors").is_file()
    assert (straight / "summary.txt").read_text().startswith("run")
    assert list((straight / "samples").glob("step_*.mid"))
    assert best["global_step"] in (8, 16)


# 7 s on the quiet 2-core VM, 34 s when ~5 other jobs shared its cores (process spawn + gloo)
def test_ddp_on_two_cpu_processes_trains(tmp_path, tokenizer, tiny_config, windows):
    cfg = tiny_config(
        tokenizer,
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn",
        "trainer.max_steps=6", "trainer.val_every_steps=3", "trainer.samples_per_validation=0",
    )  # fmt: skip
    tokenizer.save(tmp_path)
    # Plain tensors as datasets: spawned ranks unpickle them without importing test modules.
    # 6 steps x 4 windows x 2 ranks = 48 windows drawn, plus the batch Lightning prefetches.
    train = torch.stack([windows(32)[i] for i in range(64)])  # (64, 33)
    val = torch.stack([windows(32, seed=1)[i] for i in range(8)])  # (8, 33)
    run.fit(cfg, tmp_path, tokenizer, train, val)
    ckpt = load_plain(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_bf16_on_cpu_and_step_swa_train_and_checkpoint_plainly(
    tmp_path, tokenizer, tiny_config, windows
):
    cfg = tiny_config(
        tokenizer, "trainer.precision=bf16-mixed", "trainer.swa=true", "trainer.max_steps=12",
        "trainer.val_every_steps=6", "trainer.samples_per_validation=0",
    )  # fmt: skip
    tokenizer.save(tmp_path)
    run.fit(cfg, tmp_path, tokenizer, windows(32), windows(32, length=8))
    ckpt = load_plain(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 12
    # SWA from step 9 (75 %): the exported state is the average, the live weights are kept beside it
    assert int(ckpt["averaging_state"]["n_averaged"]) == 3
    live, avg = ckpt["current_model_state"], ckpt["state_dict"]
    assert any(not torch.equal(live[k], avg[k]) for k in avg)
