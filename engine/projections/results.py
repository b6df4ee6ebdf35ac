"""The :class:`Projection` result and its CSV export (one row per sample, with the snapshot's flags)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.events import Snapshot


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of one snapshot. ``index`` = sample ids (rows of ``coords``);
    ``init_step`` = step whose embedding initialised this one (None: cold start / PCA)."""

    run_id: str | None
    step: int
    method: str
    params: dict[str, Any]
    coords: np.ndarray
    index: np.ndarray
    trustworthiness: float
    seconds: float
    init_step: int | None = None

    @property
    def x(self) -> np.ndarray:
        return self.coords[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.coords[:, 1]


def snapshot_parts(
    snapshot: Snapshot | Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(features, labels, flags) of a Snapshot event or of a stored snapshot (``flag_<name>`` keys)."""
    if isinstance(snapshot, Snapshot):
        return np.asarray(snapshot.features), np.asarray(snapshot.labels), dict(snapshot.flags)
    flags = {key[5:]: np.asarray(value) for key, value in snapshot.items() if key.startswith("flag_")}
    return np.asarray(snapshot["features"]), np.asarray(snapshot["labels"]), flags


def sample_ids(features: np.ndarray, flags: Mapping[str, np.ndarray]) -> np.ndarray:
    """Ids of a snapshot's rows: its ``index`` flag (the dataset rows it holds) when present, else
    0..n-1 — what frames are matched on when they are aligned or warm-started from each other."""
    index = flags.get("index")
    return np.arange(len(features), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)


def _cell(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, ".7g")
    return str(value)


def projection_csv(projection: Projection, snapshot: Snapshot | Mapping[str, np.ndarray]) -> str:
    """CSV text of a projection's coordinates, one row per sample, in the snapshot's row order.

    Columns ``index,label,given_label,pred,x,y,is_noisy,correct,step,method`` then any other flag.
    ``label`` is the true class (``true_label`` when label noise was applied, else the training
    label), ``given_label`` the training label the model saw; ``pred``/``correct`` are empty when the
    snapshot has no predictions (regression), ``is_noisy`` is 0 when no noise was applied. NaN
    coordinates (points UMAP left disconnected) are written as empty cells.
    """
    features, labels, flags = snapshot_parts(snapshot)
    index = sample_ids(features, flags)
    if len(index) != len(projection.index) or not np.array_equal(index, projection.index):
        raise ValueError("projection_csv: the projection was computed on other samples than this snapshot")
    n = len(index)
    empty = np.full(n, "", dtype=object)
    label = flags.get("true_label", labels)
    columns: dict[str, Any] = {
        "index": index, "label": label, "given_label": labels,
        "pred": flags.get("pred", empty), "x": projection.coords[:, 0], "y": projection.coords[:, 1],
        "is_noisy": flags.get("is_noisy", np.zeros(n, dtype=bool)), "correct": flags.get("correct", empty),
        "step": np.full(n, projection.step), "method": np.full(n, projection.method, dtype=object),
    }
    for name in sorted(flags):
        if name not in columns and name not in ("true_label",) and np.asarray(flags[name]).shape[:1] == (n,):
            columns[name] = np.asarray(flags[name])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(columns))
    cols = [np.asarray(c).tolist() if not isinstance(c, np.ndarray) or c.dtype != object else list(c)
            for c in columns.values()]
    for row in zip(*cols, strict=True):
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()

