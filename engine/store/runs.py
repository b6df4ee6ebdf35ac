"""Runs: create, finish, rename, tag, delete, look up and list."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from engine.store.base import StoreBase
from engine.store.owners import _HOSTNAME, _OWN_RUNS, _OWN_RUNS_LOCK, _new_run_id, _process_start_ticks
from engine.store.schema import _RUN_COLUMNS, STATUSES, StoreError, _one_line


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")


class RunsMixin(StoreBase):
    """The ``runs`` table."""

    def create_run(
        self,
        config: Mapping[str, Any],
        name: str | None = None,
        preset: str | None = None,
        device: str = "cpu",
        seed: int = 0,
        versions: Mapping[str, Any] | None = None,
        *,
        tags: Iterable[str] = (),
        sweep_id: str | None = None,
    ) -> str:
        """Record a new run with status ``running``, owned by this process; return its id."""
        try:
            config_json = json.dumps(dict(config), sort_keys=True)
            versions_json = json.dumps(dict(versions or {}), sort_keys=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"config: not JSON-serialisable ({_one_line(err)})") from None
        tags_json = json.dumps(sorted(set(map(str, tags))))
        pid = os.getpid()
        for _ in range(10):
            run_id = _new_run_id()
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, name, preset, config_json, status, message, created_at, device, "
                        "seed, versions_json, pid, hostname, pid_start, tags_json, sweep_id) "
                        "VALUES (?, ?, ?, ?, 'running', '', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, name, preset, config_json, time.time(), device, int(seed), versions_json,
                         pid, _HOSTNAME, _process_start_ticks(pid), tags_json, sweep_id),
                    )
            except sqlite3.IntegrityError:
                continue  # id collision within the same second: draw again
            with _OWN_RUNS_LOCK:
                _OWN_RUNS.add(run_id)
            return run_id
        raise RuntimeError("could not draw a unique run id")  # pragma: no cover

    def set_status(self, run_id: str, status: str, message: str | None = None) -> None:
        """Change the status (and the message, when given) without touching ``finished_at``."""
        _check_status(status)
        with self._write() as conn:
            if message is None:
                cur = conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
            else:
                cur = conn.execute("UPDATE runs SET status = ?, message = ? WHERE id = ?", (status, message, run_id))
            self._require_updated(cur, run_id)

    def finish_run(self, run_id: str, status: str, message: str = "") -> None:
        """Set the final status and ``finished_at``, after flushing this store's writers for the run.

        Flushing first means a reader that sees the final status also sees the final metrics.
        """
        _check_status(status)
        if status == "running":
            raise ValueError("status: a finished run needs a final status, not 'running'")
        for writer in list(self._writers):
            if writer.run_id == run_id and not writer.closed:
                writer.flush()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = ?, message = ?, finished_at = ? WHERE id = ?",
                (status, message, time.time(), run_id),
            )
            self._require_updated(cur, run_id)

    def rename_run(self, run_id: str, name: str) -> None:
        """Set the human-readable name (ids never change)."""
        with self._write() as conn:
            self._require_updated(conn.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id)), run_id)

    def add_tags(self, run_id: str, *tags: str) -> None:
        """Attach free-form labels (e.g. ``"baseline"``); ``list_runs(tag=...)`` filters on them."""
        with self._write() as conn:
            row = conn.execute("SELECT tags_json FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"unknown run id {run_id!r} in store {self.path}; see `python -m engine list`")
            merged = sorted(set(json.loads(row[0])) | set(map(str, tags)))
            conn.execute("UPDATE runs SET tags_json = ? WHERE id = ?", (json.dumps(merged), run_id))

    def delete_run(self, run_id: str) -> bool:
        """Delete a run's rows (run, metrics, artifacts) and its folder; False if there was no such run.

        Exact ids only — a prefix is too easy to get wrong for something irreversible. Rows go
        first, in one transaction, so an interruption at worst leaves an orphan folder.
        """
        run_dir = self.run_dir(run_id)
        with self._write() as conn:
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM artifacts WHERE run_id = ?", (run_id,))
            existed = conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0
        if run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
        with _OWN_RUNS_LOCK:
            _OWN_RUNS.discard(run_id)
        return existed

    def resolve_run_id(self, run_id: str) -> str | None:
        """Full id for an exact id or a unique prefix; None if nothing matches.

        Raises StoreError when the prefix is ambiguous, so a CLI user gets told to type more.
        """
        conn = self._conn()
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            return run_id
        if not run_id:
            return None
        matches = [r[0] for r in conn.execute(
            "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 3", (run_id, run_id + "\U0010ffff")
        )]
        if len(matches) > 1:
            raise StoreError(
                f"run id prefix {run_id!r} matches several runs ({', '.join(matches[:2])}, ...); give more characters"
            )
        return matches[0] if matches else None

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run as a dict (``config``, ``versions`` and ``tags`` parsed), or None.

        Accepts a unique id prefix. Keys: id, name, preset, config, status, message, created_at,
        finished_at, device, seed, versions, pid, hostname, tags, sweep_id.
        """
        full = self.resolve_run_id(run_id)
        if full is None:
            return None
        row = self._conn().execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (full,)).fetchone()
        return None if row is None else _row_to_run(row)

    def list_runs(
        self,
        limit: int | None = None,
        status: str | None = None,
        preset: str | None = None,
        tag: str | None = None,
        *,
        sweep_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, optionally filtered; same dicts as :meth:`get_run`."""
        where, params = [], []
        for column, value in (("status", status), ("preset", preset), ("sweep_id", sweep_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        runs = (_row_to_run(row) for row in self._conn().execute(sql, params))
        if tag is not None:
            runs = (run for run in runs if tag in run["tags"])  # tags are JSON; filter in Python
        out = []
        for run in runs:
            if limit is not None and len(out) >= limit:
                break
            out.append(run)
        return out

    def _require_updated(self, cursor: sqlite3.Cursor, run_id: str) -> None:
        if cursor.rowcount == 0:
            raise StoreError(f"unknown run id {run_id!r} in store {self.path}; see `python -m engine list`")


def _row_to_run(row: tuple[Any, ...]) -> dict[str, Any]:
    (run_id, name, preset, config_json, status, message, created_at, finished_at, device, seed,
     versions_json, pid, hostname, tags_json, sweep_id) = row
    return {
        "id": run_id,
        "name": name,
        "preset": preset,
        "config": json.loads(config_json),
        "status": status,
        "message": message,
        "created_at": created_at,
        "finished_at": finished_at,
        "device": device,
        "seed": seed,
        "versions": json.loads(versions_json or "{}"),
        "pid": pid,
        "hostname": hostname,
        "tags": json.loads(tags_json or "[]"),
        "sweep_id": sweep_id,
    }
