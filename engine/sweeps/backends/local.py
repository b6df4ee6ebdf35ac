"""``local`` (default): a process pool on this machine, one cell per worker process.

Why processes and not threads: a training step holds the GIL for much of its Python-side work,
so threads would serialise; each process gets its own interpreter and a deliberate torch thread
count (the config's ``train.threads``, 0 = one), and the pool is sized cores ÷ threads so cells
do not fight over cores. Workers are forked from a ``forkserver`` that has already imported the
engine (torch included), so a worker starts in milliseconds, not seconds, and inherits no
threads or open SQLite handles from the caller (a Streamlit server has many); ``spawn`` is the
fallback where forkserver does not exist. Each worker opens the store itself.

Workers die with the driver (``engine.sweeps.lifeline``): a ``kill -9`` of the driver takes the
workers, and with them the fork server and the resource tracker, down within seconds.

If a worker process dies (OOM killer, segfault) the pool breaks and every cell then running is
lost with it: those cells are retried once in a fresh pool, then recorded as failed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from engine.config import ConfigError
from engine.store import _process_start_ticks
from engine.sweeps.backends import Backend, Done, default_workers, register
from engine.sweeps.lifeline import bind_to_driver
from engine.sweeps.worker import CellReport, CellTask, run_cell

_STOP: Any = None  # the pool's stop flag, set in each worker by the initializer


def _init_worker(stop: Any, driver_pid: int, driver_start: int | None) -> None:
    global _STOP
    _STOP = stop
    bind_to_driver(driver_pid, driver_start)


def _pool_cell(task: CellTask) -> CellReport:
    return run_cell(task, _STOP.is_set)


def _context() -> Any:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["engine.sweeps.worker", "engine.runner"])
        return ctx
    return mp.get_context("spawn")


@register("local")
class LocalPool(Backend):
    description = "process pool on this machine"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if address:
            raise ConfigError("--address: only the ray backend connects to a cluster")
        super().__init__(workers, None)
        self._ctx = _context()
        self._stop = self._ctx.Event()

    def run(self, tasks: Sequence[CellTask], done: Done) -> None:
        todo, retried = deque(tasks), set[int]()
        while todo and not self._stop.is_set():
            workers = default_workers(todo, self.workers)
            driver = os.getpid()
            with ProcessPoolExecutor(workers, mp_context=self._ctx, initializer=_init_worker,
                                     initargs=(self._stop, driver, _process_start_ticks(driver))) as pool:
                broken = self._round(pool, workers, todo, retried, done)
            retried.update(t.index for t in broken)
            todo.extendleft(reversed(broken))  # retried first, once, in a fresh pool

    def _round(self, pool: ProcessPoolExecutor, workers: int, todo: deque[CellTask], retried: set[int],
               done: Done) -> list[CellTask]:
        """Keep at most ``workers`` cells in flight and submit the next as one ends, so a stop has
        nothing queued to take back. Returns the cells lost to a broken pool (to retry)."""
        in_flight: dict[Future[CellReport], CellTask] = {}
        broken: list[CellTask] = []
        while True:
            while todo and len(in_flight) < workers and not self._stop.is_set() and not broken:
                task = todo.popleft()
                try:
                    in_flight[pool.submit(_pool_cell, task)] = task
                except BrokenProcessPool:
                    todo.appendleft(task)
                    break
            if not in_flight:
                return broken
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                task = in_flight.pop(future)
                err = future.exception()
                if isinstance(err, BrokenProcessPool) and task.index not in retried:
                    broken.append(task)
                elif err is not None:
                    done(task, CellReport(task.index, None, "failed", f"{type(err).__name__}: {err}"))
                else:
                    done(task, future.result())

    def stop(self) -> None:
        self._stop.set()  # running cells stop at their next step; nothing else gets submitted
