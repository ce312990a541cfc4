"""Per-file worker processes with a time limit: no file may stall a corpus (issue 14).

``map_files(fn, items, workers=, timeout=)`` runs ``fn(item)`` for every item in worker processes,
one file at a time per worker, and yields a :class:`FileOutcome` per item as soon as it is done (in
completion order). A file that runs past ``timeout`` seconds has its worker killed and is reported
as ``timeout after N s``; a worker that dies (out of memory, a crash inside a C extension) has its
file reported as ``worker died (...)``. Either way a fresh worker takes its place and the other files
go on. ``concurrent.futures.ProcessPoolExecutor`` can do neither: it cannot cancel a running task,
and one dead worker breaks the whole pool (``BrokenProcessPool``).

``timeout=0`` disables the limit; with one worker and no limit ``fn`` runs in this process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMEOUT_S", "FileOutcome", "map_files"]

DEFAULT_TIMEOUT_S = 300.0
"""Default per-file limit. The slowest corpus file read through music21 took 45 s alone on an idle
2-core machine (Beethoven opus 132, issue 14) and ~3x that with the cores shared; 300 s leaves room
for that and still ends a hung file within minutes. ``--timeout`` changes it."""

_START_S = 120.0
"""How long a new worker may take to import and initialize before the run gives up."""


@dataclass
class FileOutcome:
    """One item's result: ``value`` from ``fn``, or ``error`` (one line) when it timed out/died."""

    index: int
    value: Any
    error: str | None
    seconds: float


def map_files(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT_S,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[FileOutcome]:
    """Run ``fn`` over ``items``; yields one :class:`FileOutcome` per item (completion order).

    ``fn`` should turn a bad file into a value itself; an exception it raises anyway becomes the
    item's ``error`` (``"TypeName: message"``) in a worker, and propagates in-process.
    """
    items = list(items)
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if timeout < 0:
        raise ValueError(f"timeout={timeout} must be >= 0 seconds (0 = no limit)")
    if not items:
        return
    if workers == 1 and not timeout:
        if initializer is not None:
            initializer(*initargs)
        for i, item in enumerate(items):
            t0 = time.perf_counter()
            value = fn(item)
            yield FileOutcome(i, value, None, time.perf_counter() - t0)
        return
    yield from _Pool(fn, min(workers, len(items)), timeout, initializer, initargs).run(items)


class _Worker:
    def __init__(self, ctx, fn, initializer, initargs) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, fn, initializer, initargs), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: tuple[int, float] | None = None  # (index, started)
        self.started = time.perf_counter()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class _Pool:
    def __init__(self, fn, workers, timeout, initializer, initargs) -> None:
        self.fn, self.n, self.timeout = fn, workers, timeout
        self.initializer, self.initargs = initializer, initargs
        self.ctx = multiprocessing.get_context()

    def _spawn(self) -> _Worker:
        return _Worker(self.ctx, self.fn, self.initializer, self.initargs)

    def run(self, items: list) -> Iterator[FileOutcome]:
        pool = [self._spawn() for _ in range(self.n)]
        pending = list(range(len(items)))[::-1]  # pop() from the end = first item first
        left = len(items)
        try:
            while left:
                for k, w in enumerate(pool):
                    if w.ready and w.task is None and pending:
                        i = pending.pop()
                        try:
                            w.conn.send((i, items[i]))
                        except OSError:  # it died idle: not this item's fault; retry elsewhere
                            pending.append(i)
                            w.kill()
                            pool[k] = self._spawn()
                            continue
                        w.task = (i, time.perf_counter())
                busy = [w for w in pool if w.task is not None or not w.ready]
                waits = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
                wait(waits, timeout=self._next_deadline(busy))
                for k, w in enumerate(pool):
                    outcome, replace = self._check(w)
                    if outcome is not None:
                        left -= 1
                        yield outcome
                    if replace:
                        w.kill()
                        pool[k] = self._spawn()
        finally:
            for w in pool:
                if w.proc.is_alive() and w.task is None:
                    with contextlib.suppress(OSError):
                        w.conn.send(None)
            for w in pool:
                w.proc.join(2)
                w.kill()

    def _next_deadline(self, busy: list[_Worker]) -> float | None:
        now = time.perf_counter()
        ends = [w.task[1] + self.timeout - now for w in busy if w.task and self.timeout]
        ends += [w.started + _START_S - now for w in busy if not w.ready]
        return max(0.0, min(ends)) + 0.01 if ends else None

    def _check(self, w: _Worker) -> tuple[FileOutcome | None, bool]:
        """Read what ``w`` has to say: (an outcome or None, whether to replace the worker)."""
        now = time.perf_counter()
        if w.conn.poll():
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is not None:
                if msg[0] == "ready":
                    w.ready = True
                    return None, False
                if msg[0] == "init_error":
                    raise RuntimeError(f"worker could not start: {msg[1]}")
                i, value, error, seconds = msg
                w.task = None
                return FileOutcome(i, value, error, seconds), False
        if not w.proc.is_alive():
            w.proc.join(1)
            if w.task is None:
                if not w.ready:
                    raise RuntimeError(
                        f"worker exited while starting ({_exit_reason(w.proc.exitcode)})"
                    )
                return None, True
            i, started = w.task
            reason = f"worker died ({_exit_reason(w.proc.exitcode)}); the pool was replaced"
            log.warning("item %d: %s", i, reason)
            return FileOutcome(i, None, reason, now - started), True
        if w.task is not None and self.timeout and now - w.task[1] > self.timeout:
            i, started = w.task
            return FileOutcome(i, None, f"timeout after {self.timeout:g} s", now - started), True
        if not w.ready and now - w.started > _START_S:
            raise RuntimeError(f"worker did not start within {_START_S:g} s")
        return None, False


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = "; out of memory?" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _serve(conn: Connection, fn, initializer, initargs) -> None:
    """Worker loop: initialize, say ready, then run one item per message until ``None``."""
    try:
        if initializer is not None:
            initializer(*initargs)
    except Exception as err:
        conn.send(("init_error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if msg is None:
            return
        i, item = msg
        t0 = time.perf_counter()
        try:
            value, error = fn(item), None
        except Exception as err:  # reported for this item; the worker serves the next one
            value, error = None, f"{type(err).__name__}: {err}"
        conn.send((i, value, error, time.perf_counter() - t0))
