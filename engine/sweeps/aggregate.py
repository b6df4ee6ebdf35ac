"""Seeds folded into grid points: mean and spread of a final metric, and the outcome classes.

Spread is the sample standard deviation over seeds (ddof = 1; None with a single seed): what a
reader of a phase diagram needs to judge whether two neighbouring tiles really differ. Only
finished cells (completed or diverged) count; a metric that ended non-finite (a diverged run's
loss) is left out of the mean and counted in ``nonfinite`` — the outcome map shows divergence.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from engine.outcome import Outcome
from engine.sweeps.monitor import CellState

# Order used to break ties in the majority and to lay out the outcome colour bar.
OUTCOMES = ("generalized", "grokked", "memorized", "partial", "no_learning", "diverged", "stopped")
assert set(OUTCOMES) == set(get_args(Outcome)), "engine.outcome gained a class: place it in OUTCOMES"


@dataclass
class PointSummary:
    params: dict[str, Any]
    seeds: int  # cells at this point
    finished: int  # of which finished
    run_ids: list[str] = field(default_factory=list)  # finished runs
    values: list[float] = field(default_factory=list)  # finite final values of the metric
    nonfinite: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def fractions(self) -> dict[str, float]:
        total = sum(self.outcomes.values())
        return {k: self.outcomes[k] / total for k in OUTCOMES if self.outcomes[k]} if total else {}

    @property
    def majority(self) -> str | None:
        if not self.outcomes:
            return None
        return max(OUTCOMES, key=lambda k: (self.outcomes[k], -OUTCOMES.index(k)))

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "seeds": self.seeds, "finished": self.finished, "mean": self.mean,
                "std": self.std, "n": len(self.values), "nonfinite": self.nonfinite, "majority": self.majority,
                "outcomes": {k: self.outcomes[k] for k in OUTCOMES if self.outcomes[k]},
                "fractions": self.fractions, "run_ids": self.run_ids}


def aggregate(cells: Sequence[CellState], metric: str | None = None) -> list[PointSummary]:
    """One summary per grid point, in the cells' order; ``metric`` None = outcomes only."""
    points: dict[str, PointSummary] = {}
    for cell in cells:
        key = json.dumps(cell.params, sort_keys=True)
        point = points.setdefault(key, PointSummary(dict(cell.params), 0, 0))
        point.seeds += 1
        if not cell.finished:
            continue
        point.finished += 1
        if cell.run_id:
            point.run_ids.append(cell.run_id)
        if cell.outcome:
            point.outcomes[cell.outcome] += 1
        if metric is not None and metric in cell.final:
            value = cell.final[metric]
            if value is None:
                point.nonfinite += 1
            else:
                point.values.append(float(value))
    return list(points.values())


def summary_csv(points: Sequence[PointSummary], metric: str | None) -> str:
    """The aggregated grid as CSV: axis columns, then n / mean / std of ``metric``, outcome counts."""
    keys = list(points[0].params) if points else []
    out = io.StringIO()
    writer = csv.writer(out)
    value_cols = [f"{metric}_mean", f"{metric}_std", "n"] if metric else []
    writer.writerow([*keys, "seeds", "finished", *value_cols, "majority", *OUTCOMES, "run_ids"])
    for p in points:
        values = [p.mean, p.std, len(p.values)] if metric else []
        writer.writerow([*(json.dumps(p.params[k]) if not isinstance(p.params[k], str) else p.params[k]
                           for k in keys), p.seeds, p.finished,
                         *("" if v is None else v for v in values), p.majority or "",
                         *(p.outcomes[k] for k in OUTCOMES), " ".join(p.run_ids)])
    return out.getvalue()
