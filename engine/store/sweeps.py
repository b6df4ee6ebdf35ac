"""Sweeps: the grid a sweep was launched with and its status; its cells are ordinary runs."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from engine.store.base import StoreBase
from engine.store.owners import _HOSTNAME, _OWN_RUNS, _OWN_RUNS_LOCK, _new_run_id, _process_start_ticks
from engine.store.schema import _SWEEP_COLUMNS, SWEEP_STATUSES, StoreError


class SweepsMixin(StoreBase):
    """The ``sweeps`` table."""

    def create_sweep(self, spec: Mapping[str, Any], name: str | None = None, preset: str | None = None,
                     backend: str | None = None) -> str:
        """Record a new sweep (its spec as JSON) with status ``running``, owned by this process."""
        spec_json = json.dumps(dict(spec), sort_keys=True)
        for _ in range(10):
            sweep_id = _new_run_id("s")
            try:
                with self._write() as conn:
                    conn.execute(
                        f"INSERT INTO sweeps ({_SWEEP_COLUMNS}, pid, hostname, pid_start) "
                        "VALUES (?, ?, ?, ?, ?, 'running', '', ?, NULL, ?, ?, ?)",
                        (sweep_id, name, preset, spec_json, backend, time.time(), os.getpid(), _HOSTNAME,
                         _process_start_ticks(os.getpid())),
                    )
            except sqlite3.IntegrityError:
                continue
            with _OWN_RUNS_LOCK:
                _OWN_RUNS.add(sweep_id)
            return sweep_id
        raise RuntimeError("could not draw a unique sweep id")  # pragma: no cover

    def set_sweep_status(self, sweep_id: str, status: str, message: str = "", backend: str | None = None) -> None:
        """``running`` (re)claims the sweep for this process (a resume); anything else finishes it."""
        if status not in SWEEP_STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(SWEEP_STATUSES)}")
        with self._write() as conn:
            if status == "running":
                cur = conn.execute(
                    "UPDATE sweeps SET status = ?, message = ?, finished_at = NULL, pid = ?, hostname = ?, "
                    "pid_start = ?, backend = COALESCE(?, backend) WHERE id = ?",
                    (status, message, os.getpid(), _HOSTNAME, _process_start_ticks(os.getpid()), backend, sweep_id),
                )
                with _OWN_RUNS_LOCK:
                    _OWN_RUNS.add(sweep_id)
            else:
                cur = conn.execute("UPDATE sweeps SET status = ?, message = ?, finished_at = ? WHERE id = ?",
                                   (status, message, time.time(), sweep_id))
            if cur.rowcount == 0:
                raise StoreError(f"unknown sweep id {sweep_id!r} in store {self.path}; see the Sweeps page")

    def get_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        """The sweep as a dict (``spec`` parsed), by exact id or unique prefix; None if no match."""
        conn = self._conn()
        rows = conn.execute(
            f"SELECT {_SWEEP_COLUMNS} FROM sweeps WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
            (sweep_id, sweep_id + "\U0010ffff"),
        ).fetchall() if sweep_id else []
        exact = [r for r in rows if r[0] == sweep_id]
        if len(rows) > 1 and not exact:
            raise StoreError(f"sweep id prefix {sweep_id!r} matches several sweeps; give more characters")
        row = (exact or rows or [None])[0]
        return None if row is None else _row_to_sweep(row)

    def list_sweeps(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sweeps, newest first."""
        sql = f"SELECT {_SWEEP_COLUMNS} FROM sweeps ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_row_to_sweep(row) for row in self._conn().execute(sql)]


def _row_to_sweep(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "name", "preset", "spec", "backend", "status", "message", "created_at", "finished_at")
    out = dict(zip(keys, row, strict=True))
    out["spec"] = json.loads(out["spec"])
    return out

