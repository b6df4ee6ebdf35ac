"""One sweep cell, as every backend runs it: a normal run through ``runner.execute``.

The same function runs in a pool process, a Ray task or the calling thread, so equal seeds give
bit-identical cells whatever the backend (the torch thread count comes from the config).

Two ways results reach the store:

* **direct** — the worker opens the SQLite store itself and writes as it trains (WAL lets many
  writers on one machine take turns); the UI sees the cell's progress live.
* **shipped** — for a Ray worker on another machine, where the store file is not reachable (and
  SQLite WAL must not be used over a network filesystem): the cell runs into a throwaway store
  and returns its run (config, status, every metric row, artifact files) for the driver to import.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ConfigError, validate
from engine.events import Event
from engine.store import RunStore, StoreError

_STORES: dict[str, RunStore] = {}


@dataclass(frozen=True)
class CellTask:
    """What a worker needs: the cell's validated config and where its run goes."""

    sweep_id: str
    index: int
    config: dict[str, Any]
    store_path: str

    @property
    def tags(self) -> tuple[str, ...]:
        return (f"cell:{self.index}",)

    @property
    def threads(self) -> int:
        return max(1, int(self.config.get("train", {}).get("threads", 0)))


@dataclass
class CellReport:
    """A worker's answer; ``bundle`` holds the shipped run when the worker had no access to the store."""

    index: int
    run_id: str | None
    status: str
    message: str = ""
    bundle: dict[str, Any] | None = field(default=None, repr=False)
    cpu_s: float = 0.0  # CPU time the worker process spent on the cell (all its threads)
    pid: int = 0  # the worker process, to see how cells were spread over workers


class StopWatch:
    """Subscriber that stops the trainer once ``should_stop()`` says so (checked ≤ 5× a second,
    so a cross-process flag costs nothing measurable per step)."""

    def __init__(self, trainer: Any, should_stop: Callable[[], bool], every_s: float = 0.2) -> None:
        self.trainer, self.should_stop, self.every_s = trainer, should_stop, every_s
        self.last = time.monotonic()

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            if self.should_stop():
                self.trainer.stop()


def _store(path: str) -> RunStore:
    """One store per worker process and path (connections are per thread inside it)."""
    if path not in _STORES:
        _STORES[path] = RunStore(path)
    return _STORES[path]


def record_failure(store: RunStore, task: CellTask, message: str) -> str:
    """A failed run for a cell that could not even start, so the failure is in the store like any result."""
    from engine.runner import versions

    cfg = task.config
    run_id = store.create_run(cfg, name=cfg.get("name"), preset=cfg.get("preset"), seed=int(cfg.get("seed", 0)),
                              versions=versions(), tags=task.tags, sweep_id=task.sweep_id)
    store.finish_run(run_id, "failed", message)
    return run_id


def run_into(store: RunStore, task: CellTask, should_stop: Callable[[], bool]) -> CellReport:
    """Train the cell into ``store``; setup errors (e.g. CUDA asked for but absent) become a failed run."""
    from engine.preflight import check_runnable
    from engine.runner import build_trainer, execute

    if should_stop():  # queued before the stop, picked up after it: leave the cell pending
        return CellReport(task.index, None, "pending", "stopped before it started")
    cfg = validate(task.config)
    try:
        check_runnable(cfg)  # done up front for the whole grid too; cheap here (cached per dataset)
        trainer = build_trainer(cfg)
    except ConfigError as err:
        return CellReport(task.index, record_failure(store, task, str(err)), "failed", str(err))
    created: list[str] = []
    try:
        run_id, result = execute(cfg, store, StopWatch(trainer, should_stop), trainer=trainer,
                                 sweep_id=task.sweep_id, tags=task.tags, on_created=created.append)
    except StoreError as err:  # disk full mid-run: the run is already recorded (failed, or left to recovery)
        if not created:
            raise
        return CellReport(task.index, created[0], "failed", str(err))
    return CellReport(task.index, run_id, result.status, result.message)


def run_cell(task: CellTask, should_stop: Callable[[], bool] = lambda: False) -> CellReport:
    """The direct path: write into the sweep's store."""
    cpu = time.process_time()
    report = run_into(_store(task.store_path), task, should_stop)
    report.cpu_s, report.pid = time.process_time() - cpu, os.getpid()
    return report


def run_cell_shipped(task: CellTask, should_stop: Callable[[], bool] = lambda: False) -> CellReport:
    """The shipped path: run into a temporary store and return the whole run as a bundle."""
    cpu = time.process_time()
    with tempfile.TemporaryDirectory(prefix="lab-cell-") as tmp, RunStore(tmp) as store:
        report = run_into(store, task, should_stop)
        if report.run_id is not None:
            report.bundle = export_bundle(store, report.run_id)
    report.cpu_s, report.pid = time.process_time() - cpu, os.getpid()
    return report


def export_bundle(store: RunStore, run_id: str) -> dict[str, Any]:
    """A run as plain data: the run record, metric rows and artifact files (bytes)."""
    run = store.get_run(run_id)
    assert run is not None
    metrics = {name: (steps.tolist(), values.tolist()) for name, (steps, values) in store.metrics(run_id).items()}
    artifacts = [(a["step"], a["kind"], Path(a["path"]).name, Path(a["path"]).read_bytes())
                 for a in store.artifacts(run_id) if Path(a["path"]).is_file()]
    return {"run": run, "metrics": metrics, "artifacts": artifacts}


def import_bundle(store: RunStore, bundle: dict[str, Any], sweep_id: str | None) -> str:
    """Write a shipped run into ``store`` through its public API; returns the new run id.

    The run gets a fresh id and this import's timestamps; everything it measured is kept.
    """
    run = bundle["run"]
    run_id = store.create_run(run["config"], name=run["name"], preset=run["preset"], device=run["device"],
                              seed=run["seed"], versions=run["versions"], tags=run["tags"], sweep_id=sweep_id)
    with store.metric_writer(run_id) as writer:
        for name, (steps, values) in bundle["metrics"].items():
            for step, value in zip(steps, values, strict=True):
                writer.add(step, name, value)
    for step, kind, filename, data in bundle["artifacts"]:
        path = store.run_dir(run_id) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        store.add_artifact(run_id, step, kind, path)
    store.finish_run(run_id, run["status"], run["message"])
    return run_id
