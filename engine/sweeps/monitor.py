"""The state of a sweep, read from the store — the one source of truth for the CLI, the page and
resume, whichever process or backend ran the cells.

A cell's run is the newest run tagged ``cell:<index>`` with the sweep's id. Final metrics and
the outcome class of finished runs never change, so they are read once and cached; a running
cell's step is polled incrementally.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.outcome import stored_verdict
from engine.store import RunStore, StoreError
from engine.sweeps.grid import Axis, Cell, SweepSpec

FINISHED = ("completed", "diverged")  # a result; resume skips these cells


@dataclass
class CellState:
    index: int
    params: dict[str, Any]
    seed: int
    status: str = "pending"  # pending, running, or the run's final status
    run_id: str | None = None
    message: str = ""
    step: int = 0
    final: dict[str, float | None] = field(default_factory=dict)
    outcome: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        """A cell of ``sweep --json`` (README): params, seed, run id, status, final metrics, outcome, message."""
        return {"params": self.params, "seed": self.seed, "run_id": self.run_id, "status": self.status,
                "final": self.final, "outcome": self.outcome, "message": self.message}


@dataclass
class SweepView:
    sweep_id: str
    status: str
    message: str
    spec: SweepSpec
    cells: list[CellState]

    @property
    def axes(self) -> list[Axis]:
        return self.spec.axes

    @property
    def counts(self) -> Counter[str]:
        return Counter(c.status for c in self.cells)

    @property
    def done(self) -> int:
        """Cells that ended, one way or another (not pending, not running)."""
        return sum(c.status not in ("pending", "running") for c in self.cells)

    def metric_names(self) -> list[str]:
        return sorted({name for c in self.cells for name in c.final})


class SweepMonitor:
    """Builds :class:`SweepView` s of one sweep; keep one per sweep to benefit from its caches."""

    def __init__(self, store: RunStore, sweep_id: str, cells: list[Cell] | None = None) -> None:
        """``cells``: the spec's expansion when the caller already has it (validation is ~ms a cell)."""
        record = store.get_sweep(sweep_id)
        if record is None:
            raise StoreError(f"sweep {sweep_id!r}: no such sweep in {store.path}")
        self.store, self.sweep_id = store, record["id"]
        self.spec = SweepSpec.from_dict(record["spec"])
        self.cells: list[Cell] = cells if cells is not None else self.spec.cells(runnable=False)
        self._final: dict[str, tuple[dict[str, float | None], str | None]] = {}
        self._steps: dict[str, int] = {}

    def view(self) -> SweepView:
        record = self.store.get_sweep(self.sweep_id) or {"status": "unknown", "message": ""}
        latest: dict[int, dict[str, Any]] = {}
        for run in self.store.list_runs(sweep_id=self.sweep_id):  # newest first
            for tag in run["tags"]:
                if tag.startswith("cell:"):
                    latest.setdefault(int(tag[5:]), run)
        states = []
        for cell in self.cells:
            state = CellState(cell.index, cell.params, cell.seed)
            run = latest.get(cell.index)
            if run is not None:
                state.status, state.run_id, state.message = run["status"], run["id"], run["message"] or ""
                if run["status"] == "running":
                    state.step = self._step(run["id"])
                else:
                    state.final, state.outcome = self._finished(run["id"], run["status"])
            states.append(state)
        return SweepView(self.sweep_id, record["status"], record["message"], self.spec, states)

    def _finished(self, run_id: str, status: str) -> tuple[dict[str, float | None], str | None]:
        if run_id not in self._final:
            final = {k: (v if math.isfinite(v) else None) for k, v in self.store.final_metrics(run_id).items()}
            self._final[run_id] = (final, run_outcome(self.store, run_id, status))
        return self._final[run_id]

    def _step(self, run_id: str) -> int:
        last = self._steps.get(run_id, -1)
        new = self.store.metrics(run_id, ["train/loss"], since_step=last).get("train/loss")
        if new is not None and len(new[0]):
            self._steps[run_id] = int(new[0][-1])
        return max(0, self._steps.get(run_id, 0))


def run_outcome(store: RunStore, run_id: str, status: str) -> str | None:
    """The outcome class (engine.outcome) of a stored run; None for a run that did not finish."""
    run = store.get_run(run_id)
    if run is None or status not in ("completed", "diverged", "stopped"):
        return None
    verdict = stored_verdict(store, {**run, "status": status})
    return verdict.outcome if verdict else None
