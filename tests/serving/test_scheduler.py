"""Continuous batching gives each request the CLI's tokens, whoever shares the batch and when."""

from __future__ import annotations

import time

import pytest

from aurl.generation.pipeline import plan_generation
from aurl.generation.sample import sample
from aurl.serving.scheduler import Job, QueueFullError, Scheduler

OPTIONS = [
    {"tokens": 40, "seed": 1},
    {"tokens": 30, "seed": 9},  # same filters as the row above: drawn in one group
    {"tokens": 36, "seed": 6, "bars": None},
    {"tokens": 25, "seed": 2, "temperature": 0.7, "top_k": 20},
    {"bars": 1, "seed": 3, "key": "D:min", "top_p": 0.8},
    {"tokens": 90, "seed": 4, "repetition_penalty": 1.2, "min_p": 0.05},  # slides: context 64
    {"tokens": 33, "seed": 5, "pitch_range": (48, 72), "max_polyphony": 2},
]


def _alone(bundle, opts) -> list[int]:
    """What ``aurl generate --num 1`` samples for these options (its own code path)."""
    plan = plan_generation(bundle, **opts)
    return sample(
        bundle.model, plan.prompt_ids, num=1, rule=plan.rule, filters=plan.filters,
        constraints=plan.new_constraints(), seeds=[opts["seed"]],
    )[0]  # fmt: skip


def _job(bundle, opts, timeout=60.0) -> Job:
    return Job(plan_generation(bundle, **opts), opts["seed"], deadline=time.monotonic() + timeout)


def _run(sched: Scheduler, jobs: list[Job], stagger: float = 0.0) -> None:
    sched.start()
    try:
        for job in jobs:
            sched.submit(job)
            if stagger:
                time.sleep(stagger)
        for job in jobs:
            assert job.done.wait(60), "job did not finish"
    finally:
        sched.stop()


@pytest.mark.parametrize("stagger", [0.0, pytest.param(0.01, marks=pytest.mark.slow)])
def test_batched_rows_match_single_runs_token_for_token(tiny_serve_bundle, stagger):
    expected = [_alone(tiny_serve_bundle, o) for o in OPTIONS]
    jobs = [_job(tiny_serve_bundle, o) for o in OPTIONS]
    sched = Scheduler(tiny_serve_bundle.model, max_batch=4, max_queue=8)
    _run(sched, jobs, stagger)
    assert [j.error for j in jobs] == [None] * len(jobs)
    assert [j.new for j in jobs] == expected
    assert sched.stats.steps < sum(len(e) for e in expected)  # rows really shared steps
    assert sched.cache.lengths == [0, 0, 0, 0] and not sched.rows


def test_learned_positions_slide_by_re_encoding_like_the_cli(learned_bundle):
    opts = {"tokens": 90, "seed": 7}
    job = _job(learned_bundle, opts)
    other = _job(learned_bundle, {"tokens": 20, "seed": 8})
    _run(Scheduler(learned_bundle.model, max_batch=2), [job, other])
    assert job.new == _alone(learned_bundle, opts)
    assert other.new == _alone(learned_bundle, {"tokens": 20, "seed": 8})


def test_batching_off_uses_the_cli_loop(tiny_serve_bundle):
    jobs = [_job(tiny_serve_bundle, o) for o in OPTIONS[:2]]
    sched = Scheduler(tiny_serve_bundle.model, batching=False, max_batch=16)
    assert sched.max_batch == 1
    _run(sched, jobs)
    assert [j.new for j in jobs] == [_alone(tiny_serve_bundle, o) for o in OPTIONS[:2]]


def test_queue_bound_timeout_and_cancel_free_rows(tiny_serve_bundle):
    sched = Scheduler(tiny_serve_bundle.model, max_batch=1, max_queue=1)
    late = _job(tiny_serve_bundle, {"tokens": 10, "seed": 1}, timeout=-1.0)
    gone = _job(tiny_serve_bundle, {"tokens": 10, "seed": 2})
    gone.cancel()
    sched.submit(late)
    sched.submit(gone)  # not started: max_queue + max_batch free rows may wait
    with pytest.raises(QueueFullError):
        sched.submit(_job(tiny_serve_bundle, {"tokens": 10, "seed": 3}))
    ok = _job(tiny_serve_bundle, {"tokens": 10, "seed": 4})
    sched.start()
    try:
        assert late.done.wait(10) and gone.done.wait(10)
        sched.submit(ok)
        assert ok.done.wait(30)
    finally:
        sched.stop()
    assert (late.error, gone.error, ok.error) == ("timeout", "cancelled", None)
    assert late.new == [] and len(ok.new) == 10


def test_cancel_mid_decode_frees_the_row_for_the_next_request(tiny_serve_bundle):
    sched = Scheduler(tiny_serve_bundle.model, max_batch=1, max_queue=4)
    seen = []
    long = _job(tiny_serve_bundle, {"tokens": 40, "seed": 1})

    def on_token(job, tok):
        if tok is None:  # the row started
            return
        seen.append(tok)
        if len(seen) == 5:
            job.cancel()

    long.on_token = on_token
    nxt = _job(tiny_serve_bundle, {"tokens": 12, "seed": 2})
    _run(sched, [long, nxt])
    assert long.error == "cancelled" and long.new == seen and len(seen) == 5
    assert nxt.new == _alone(tiny_serve_bundle, {"tokens": 12, "seed": 2})
