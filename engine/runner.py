"""Run a config end to end with the store as a subscriber — the one path the CLI, the UI worker,
sweeps and the reproduction tests share, so a preset behaves the same everywhere."""

from __future__ import annotations

import csv
import io
import json
import platform
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import ConfigError, RunConfig
from engine.events import FINAL_STATES, Artifact, Eval, Event, Snapshot, Status, Step
from engine.store import RunStore, StoreError
from engine.store.schema import store_fault
from engine.trainer import RunResult, Trainer, final_summary


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def build_trainer(cfg: RunConfig, **kwargs: Any) -> Trainer:
    """Build a trainer; setup errors that are the config's fault become ConfigError (exit 2)."""
    try:
        return Trainer(cfg, **kwargs)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None


class StoreRecorder:
    """Subscriber that persists every metric (batched), snapshots and the final status.

    A store fault (disk full) is raised to the trainer, which ends the run and sends the final
    status; that status is then recorded as ``failed`` with the fault's one-line message ("disk
    full") if the store can still take one small write, else the run stays ``running`` for the
    next open to mark ``interrupted`` once this process is gone. Buffered rows that could not be
    written are dropped; rows flushed before the fault are kept. ``fault`` holds the error.
    """

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.writer = store.metric_writer(run_id)
        self.fault: StoreError | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Status) and event.state in FINAL_STATES:
            self._finish(event)
            return
        try:
            self._record(event)
        except StoreError as err:
            self.fault = err
            raise

    def _finish(self, event: Status) -> None:
        if self.fault is None:
            try:
                self.writer.close()
                self.store.finish_run(self.run_id, event.state, event.message)
                return
            except StoreError as err:
                self.fault = err
        self.writer.discard()
        with suppress(StoreError):  # still full: the next open marks the run interrupted
            self.store.finish_run(self.run_id, "failed", str(self.fault))

    def _record(self, event: Event) -> None:
        if isinstance(event, Step | Eval):
            self.writer.add_many(event.step, event.metrics)
        elif isinstance(event, Snapshot):
            self.store.save_snapshot(self.run_id, event.step, features=event.features, labels=event.labels,
                                     **{f"flag_{k}": v for k, v in event.flags.items()})
            if event.boundary is not None:  # so exports and bundles can redraw the decision boundary
                self._save_artifact("boundary", event.step, event.boundary)
        elif isinstance(event, Artifact):
            self._save_artifact(event.kind, event.step, event.arrays)

    def _save_artifact(self, kind: str, step: int, arrays: Mapping[str, Any]) -> None:
        path = self.store.run_dir(self.run_id) / f"{kind}_{step:08d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            np.savez_compressed(path, **arrays)
        except OSError as err:
            with suppress(OSError):
                path.unlink()  # a truncated file is worse than none
            if (fault := store_fault(err, self.store.path)) is None:
                raise
            raise fault from None
        self.store.add_artifact(self.run_id, step, kind, path)


def execute(cfg: RunConfig, store: RunStore, *subscribers: Callable[[Event], Any],
            trainer: Trainer | None = None, on_created: Callable[[str], Any] | None = None,
            sweep_id: str | None = None, tags: Iterable[str] = ()) -> tuple[str, RunResult]:
    """Create the run in the store, train it, record everything; returns (run_id, result).

    ``on_created(run_id)`` is called before training starts (the UI needs the id of a live run).
    ``sweep_id`` and ``tags`` are recorded on the run (a sweep finds its cells through them).
    A store fault during the run (disk full) is raised as the recorder's one-line StoreError
    (exit code 1) after the trainer has ended the run.
    """
    trainer = trainer or build_trainer(cfg)
    run_id = store.create_run(cfg.to_dict(), name=cfg.name, preset=cfg.preset, device=str(trainer.device),
                              seed=cfg.seed, versions=versions(), tags=tags, sweep_id=sweep_id)
    if on_created is not None:
        on_created(run_id)
    recorder = StoreRecorder(store, run_id)
    try:
        result = trainer.run(recorder, *subscribers)
    except BaseException:  # KeyboardInterrupt: the run is kept, marked stopped
        with suppress(StoreError):  # a full disk must not hide the interrupt behind its own traceback
            recorder.writer.close()
            store.finish_run(run_id, "stopped", "interrupted by the user")
        raise
    if recorder.fault is not None:
        raise StoreError(str(recorder.fault), recorder.fault.exit_code) from None
    return run_id, result


def summary(run_id: str, result: RunResult, history_path: str | None) -> dict[str, Any]:
    """The ``run --json`` object (its keys are listed in the README)."""
    return {"run_id": run_id, "status": result.status, "steps": result.steps, "message": result.message,
            "outcome": result.outcome or None, "final": final_summary(result.final), "history_path": history_path}


def metrics_csv(store: RunStore, run_id: str) -> str:
    """All metrics of a run as ``step,name,value`` CSV text, rows sorted by step then name."""
    rows = []
    for name, (steps, values) in store.metrics(run_id).items():
        rows.extend(zip(steps.tolist(), [name] * len(steps), values.tolist(), strict=True))
    rows.sort(key=lambda r: (r[0], r[1]))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "name", "value"])
    writer.writerows(rows)
    return buf.getvalue()


def write_metrics_csv(store: RunStore, run_id: str, path: Path) -> Path:
    """:func:`metrics_csv` written to ``path`` (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(metrics_csv(store, run_id))
    return path


def write_outputs(out: Path, cfg: RunConfig, store: RunStore, run_id: str, result: RunResult) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
    csv_path = write_metrics_csv(store, run_id, out / "metrics.csv")
    result_summary = summary(run_id, result, str(csv_path))
    (out / "summary.json").write_text(json.dumps(result_summary, indent=2), encoding="utf-8")
    return result_summary
