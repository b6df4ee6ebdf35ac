"""Run a sweep: record it, skip cells already finished, hand the rest to a backend, record every
cell's fate, and report progress.

``Sweep.run()`` blocks (the CLI); ``Sweep.start()`` runs it in a daemon thread (the page), and
``stop()`` may be called from any thread. Progress goes to ``on_cell(view_of_the_cell, done,
total)`` after each cell; the live picture — running cells included — is ``view()``, read from
the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from engine.config import ConfigError
from engine.store import RunStore
from engine.sweeps.backends import Backend, get_backend
from engine.sweeps.grid import SweepSpec
from engine.sweeps.monitor import CellState, SweepMonitor, SweepView
from engine.sweeps.worker import CellReport, CellTask, import_bundle, record_failure

OnCell = Callable[[CellState, int, int], Any]


class Sweep:
    """A new sweep (``spec``) or a resumed one (``sweep_id``) on a named backend.

    Everything that can be wrong with the input is raised here, before anything runs: every
    cell is validated, the backend is looked up (and, for ray, imported).
    """

    def __init__(self, store: RunStore, spec: SweepSpec | None = None, *, sweep_id: str | None = None,
                 backend: str = "local", workers: int | None = None, address: str | None = None,
                 on_cell: OnCell | None = None) -> None:
        if (spec is None) == (sweep_id is None):
            raise ValueError("give a spec for a new sweep or a sweep_id to resume one")
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers {workers}: must be at least 1")
        self.store, self.on_cell = store, on_cell
        self.backend_name = backend
        self.backend: Backend = get_backend(backend)(workers=workers, address=address)
        cells = None
        if spec is not None:
            cells = spec.cells()  # every cell validated up front
            self.sweep_id = store.create_sweep(spec.to_dict(), name=spec.name, preset=spec.preset, backend=backend)
        else:
            store.recover_interrupted()  # a sweep whose process died is no longer "running"
            record = store.get_sweep(sweep_id or "")
            if record is None:
                raise ConfigError(f"--resume {sweep_id}: no such sweep in {store.path}")
            if record["status"] == "running":
                raise ConfigError(f"--resume {record['id']}: the sweep is still running in another process; "
                                  "stop it first (or wait for it)")
            self.sweep_id = record["id"]
            refuse_live_cells(store, self.sweep_id)
            cells = SweepSpec.from_dict(record["spec"]).cells()  # a resume checks its cells like a new sweep
        self.monitor = SweepMonitor(store, self.sweep_id, cells)
        self.state = "ready"  # ready → running → completed | stopped | failed
        self.error: str = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._done = 0
        self.reports: list[CellReport] = []  # this process's cells as the workers reported them (no bundles)

    # ---- running -----------------------------------------------------------------------------
    def run(self) -> SweepView:
        """Run every cell not already finished; returns the final view. Re-raises backend errors
        (after recording the sweep as failed) — cell failures never get here."""
        view = self.monitor.view()
        todo = [CellTask(self.sweep_id, s.index, self.monitor.cells[s.index].config, str(self.store.path))
                for s in view.cells if not s.finished]
        self._done, total = len(view.cells) - len(todo), len(view.cells)
        self.store.set_sweep_status(self.sweep_id, "running", backend=self.backend_name)
        self.state = "running"
        try:
            if todo and not self._stop.is_set():
                self.backend.run(todo, lambda task, report: self._record(task, report, total))
        except KeyboardInterrupt:
            self.stop()
            self.state = "stopped"
            self.store.set_sweep_status(self.sweep_id, "stopped", "interrupted by the user")
            raise
        except BaseException as err:
            self.state, self.error = "failed", f"{type(err).__name__}: {err}".splitlines()[0]
            self.store.set_sweep_status(self.sweep_id, "failed", self.error)
            raise
        final = self.monitor.view()
        self.state = "stopped" if self._stop.is_set() else "completed"
        counts = ", ".join(f"{n} {status}" for status, n in sorted(final.counts.items()))
        self.store.set_sweep_status(self.sweep_id, self.state, counts)
        return self.monitor.view()

    def _record(self, task: CellTask, report: CellReport, total: int) -> None:
        """Called by the backend for each cell that ended: make sure the store holds its fate."""
        if report.status == "pending":
            return  # never started (stopped first): a resume runs it
        if report.bundle is not None:
            report.run_id = import_bundle(self.store, report.bundle, self.sweep_id)
            report.bundle = None
        elif report.run_id is None:  # the worker died or raised before recording anything
            self.store.recover_interrupted()  # a dead worker's run, if any, becomes interrupted
            report.run_id = record_failure(self.store, task, report.message)
        with self._lock:
            self._done += 1
            done = self._done
            self.reports.append(report)
        if self.on_cell is not None:
            state = next(s for s in self.monitor.view().cells if s.index == task.index)
            self.on_cell(state, done, total)

    def start(self) -> Sweep:
        """Run in a daemon thread (the worker never touches the UI); errors land in ``error``."""

        def work() -> None:
            with suppress(Exception):  # recorded in self.state / self.error by run()
                self.run()

        self._thread = threading.Thread(target=work, name=f"lab-sweep-{self.sweep_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: float = 0.0) -> None:
        """Cancel cells not yet started (they stay pending: a resume runs them); running cells stop
        at their next step and are recorded ``stopped``."""
        self._stop.set()
        self.backend.stop()
        if wait and self._thread is not None:
            self._thread.join(wait)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def active(self) -> bool:
        return self.state in ("ready", "running") and (self._thread is None or self._thread.is_alive())

    def view(self) -> SweepView:
        return self.monitor.view()


def refuse_live_cells(store: RunStore, sweep_id: str) -> None:
    """Refuse a resume while a cell's run still has a live owner process (ConfigError, one line).

    Called after ``recover_interrupted``, so every run still ``running`` belongs to a process that
    is alive: a worker of a driver that is still going (or, briefly, one that has not yet noticed
    its driver died). Resuming then would train that cell a second time beside it; refusing is
    the only answer that can never double a cell, and waiting a second is enough after a kill.
    """
    live = store.list_runs(status="running", sweep_id=sweep_id)
    if not live:
        return
    cells = sorted({tag[5:] for run in live for tag in run["tags"] if tag.startswith("cell:")}, key=int)
    owners = sorted({f"{run['pid']}" + (f" on {run['hostname']}" if run["hostname"] else "") for run in live})
    raise ConfigError(f"--resume {sweep_id}: cell {', '.join(cells) or '?'} still running in process "
                      f"{', '.join(owners)}; wait for it to end (or stop it), then resume")
