"""Metrics: a buffered writer (one transaction per batch) and the reads.

A run can log ~10k metric rows/s (2 kHz x 5 metrics). One transaction per row would stall
training on fsync; :class:`MetricWriter` buffers rows and writes each batch with a single
``executemany`` inside one transaction.

Non-finite metric values: SQLite cannot store NaN (it becomes NULL), so NaN is written as NULL
and read back as ``nan``; ``±inf`` is stored as a REAL and read back as ``±inf``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from engine.store.base import StoreBase


def _to_real(value: Any) -> float | None:
    """Metric value as stored: a float, or None for NaN (SQLite turns NaN into NULL anyway)."""
    v = float(value)
    return None if math.isnan(v) else v


class MetricWriter:
    """Buffers metric rows in memory and writes them in one transaction per batch.

    A batch is written when ``max_buffer`` rows are waiting or ``flush_every_s`` has passed since
    the last write (checked on each ``add``), and on ``flush()`` / ``close()``. Rows that were
    flushed are durable even if the process is then killed; rows still in the buffer are lost,
    which is why a paused trainer should call ``flush()``.

    ``flushes`` and ``rows_written`` count the transactions and rows written so far (the tests
    use them to check that batching really batches). Safe to use from several threads.
    """

    def __init__(self, store: MetricsMixin, run_id: str, flush_every_s: float = 0.5, max_buffer: int = 5000) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer: must be at least 1")
        self._store = store
        self.run_id = run_id
        self.flush_every_s = float(flush_every_s)
        self.max_buffer = int(max_buffer)
        self.flushes = 0
        self.rows_written = 0
        self.closed = False
        self._rows: list[tuple[str, int, str, float | None]] = []
        self._lock = threading.RLock()
        self._last_flush = time.monotonic()

    def add(self, step: int, name: str, value: float) -> None:
        """Queue one value (anything ``float()`` accepts: Python/NumPy scalars, 0-d tensors)."""
        row = (self.run_id, int(step), str(name), _to_real(value))
        with self._lock:
            self._check_open()
            self._rows.append(row)
        self._maybe_flush()

    def add_many(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue several metrics logged at the same step."""
        rows = [(self.run_id, int(step), str(name), _to_real(value)) for name, value in metrics.items()]
        with self._lock:
            self._check_open()
            self._rows.extend(rows)
        self._maybe_flush()

    def flush(self) -> int:
        """Write all buffered rows in one transaction; return how many were written.

        If the write fails (e.g. the disk is full) the rows stay buffered and the error is raised,
        so a later flush can retry without losing them.
        """
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._rows:
                return 0
            rows, self._rows = self._rows, []
            try:
                self._store._insert_metrics(rows)
            except BaseException:
                self._rows = rows + self._rows
                raise
            self.flushes += 1
            self.rows_written += len(rows)
            return len(rows)

    def close(self) -> None:
        """Flush what is left and refuse further rows. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.flush()
            self.closed = True

    def discard(self) -> int:
        """Drop the buffered rows and refuse further ones; return how many were dropped.

        For a store that can no longer be written (disk full): the rows could never be written,
        and flushing again on close would only repeat the error. Rows already flushed are kept.
        """
        with self._lock:
            dropped, self._rows = len(self._rows), []
            self.closed = True
            return dropped

    @property
    def pending(self) -> int:
        """Rows buffered but not yet written."""
        return len(self._rows)

    def _maybe_flush(self) -> None:
        if len(self._rows) >= self.max_buffer or time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"metric writer for run {self.run_id} is closed")

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MetricsMixin(StoreBase):
    """The ``metrics`` table."""

    def metric_writer(self, run_id: str, flush_every_s: float = 0.5, max_buffer: int = 5000) -> MetricWriter:
        """A buffered writer for ``run_id``; closed (and flushed) by :meth:`close` if still open."""
        writer = MetricWriter(self, run_id, flush_every_s=flush_every_s, max_buffer=max_buffer)
        self._writers.add(writer)
        return writer

    def _insert_metrics(self, rows: list[tuple[str, int, str, float | None]]) -> None:
        with self._write() as conn:
            conn.executemany("INSERT INTO metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)", rows)

    def metrics(
        self, run_id: str, names: Iterable[str] | None = None, *, since_step: int | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{name: (steps int64, values float64)}`` sorted by step; NULL reads back as NaN.

        Names without rows are left out. ``since_step`` returns only steps > since_step, so a live
        view in another process can poll incrementally.
        """
        with self._read() as conn:
            if names is None:
                names = [r[0] for r in conn.execute(
                    "SELECT DISTINCT name FROM metrics WHERE run_id = ? ORDER BY name", (run_id,)
                )]
            out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            lower = -(2**63) if since_step is None else int(since_step) + 1
            for name in names:
                rows = conn.execute(
                    "SELECT step, value FROM metrics WHERE run_id = ? AND name = ? AND step >= ? ORDER BY step",
                    (run_id, name, lower),
                ).fetchall()
                if not rows:
                    continue
                steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                values = np.fromiter((math.nan if r[1] is None else r[1] for r in rows), dtype=np.float64,
                                     count=len(rows))
                out[name] = (steps, values)
        return out

    def metric_names(self, run_id: str) -> list[str]:
        """Names of the metrics logged for a run, sorted."""
        return [r[0] for r in self._conn().execute(
            "SELECT DISTINCT name FROM metrics WHERE run_id = ? ORDER BY name", (run_id,)
        )]

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """``{name: value at the highest step}``; NaN stays NaN (a diverged run's last loss)."""
        # SQLite guarantees the bare column `value` comes from the row holding MAX(step).
        rows = self._conn().execute(
            "SELECT name, MAX(step), value FROM metrics WHERE run_id = ? GROUP BY name ORDER BY name", (run_id,)
        )
        return {name: (math.nan if value is None else float(value)) for name, _, value in rows}
