"""filepool: per-file time limit, dead workers replaced, errors per item, in-process fast path."""

from __future__ import annotations

import os
import signal
import time

import pytest

from aurl.data.filepool import map_files


def _work(x):
    """Stub file job: ``hang`` sleeps past any test limit, ``die`` SIGKILLs its own worker
    (as the kernel's OOM killer would), ``boom`` raises, a number is squared."""
    if x == "hang":
        time.sleep(120)
    if x == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if x == "boom":
        raise RuntimeError("bad file")
    return x * x


def test_a_hanging_item_and_a_dying_worker_are_reported_and_the_rest_run():
    items = [1, "hang", 2, "die", 3, 4, "boom", 5]
    t0 = time.perf_counter()
    outs = {o.index: o for o in map_files(_work, items, workers=2, timeout=1.0)}
    assert time.perf_counter() - t0 < 20  # not 120 s: the hung worker was killed
    assert sorted(outs) == list(range(len(items)))
    assert [outs[i].value for i in (0, 2, 4, 5, 7)] == [1, 4, 9, 16, 25]
    assert outs[1].error == "timeout after 1 s" and outs[1].value is None
    assert outs[3].error.startswith("worker died (killed by SIGKILL; out of memory?)")
    assert outs[6].error == "RuntimeError: bad file"
    assert all(outs[i].error is None for i in (0, 2, 4, 5, 7))


def test_one_worker_with_a_limit_survives_its_own_death():
    outs = sorted(
        map_files(_work, ["die", 3, "hang", 4], workers=1, timeout=1.0), key=lambda o: o.index
    )
    assert [o.value for o in outs] == [None, 9, None, 16]
    assert outs[0].error.startswith("worker died") and outs[2].error == "timeout after 1 s"


def test_no_limit_and_one_worker_runs_in_process_in_order():
    outs = list(map_files(lambda x: (x, os.getpid()), [3, 1, 2], workers=1, timeout=0))
    assert [o.value for o in outs] == [(3, os.getpid()), (1, os.getpid()), (2, os.getpid())]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="workers=0"):
        list(map_files(_work, [1], workers=0))
    with pytest.raises(ValueError, match="timeout=-1"):
        list(map_files(_work, [1], timeout=-1))
