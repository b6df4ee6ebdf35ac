"""Artifacts: files a run produced, recorded relative to the store folder, and ``.npz`` snapshots."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from engine.store.base import StoreBase
from engine.store.schema import store_fault


class ArtifactsMixin(StoreBase):
    """The ``artifacts`` table and the run folders."""

    def add_artifact(self, run_id: str, step: int | None, kind: str, path: str | Path) -> None:
        """Record a file produced by the run. Paths inside the store folder are kept relative to
        it, so moving the whole store folder (or LAB_HOME) keeps artifacts findable."""
        p = Path(path).absolute()
        try:
            stored = p.relative_to(self.root).as_posix()
        except ValueError:
            stored = str(p)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO artifacts (run_id, step, kind, path) VALUES (?, ?, ?, ?)",
                (run_id, None if step is None else int(step), kind, stored),
            )

    def artifacts(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """``[{run_id, step, kind, path}]`` ordered by step; ``path`` is an absolute string."""
        sql = "SELECT run_id, step, kind, path FROM artifacts WHERE run_id = ?"
        params: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY step, rowid"
        return [
            {"run_id": rid, "step": step, "kind": k, "path": str(self.root / p)}  # root / absolute = absolute
            for rid, step, k, p in self._conn().execute(sql, params)
        ]

    def save_snapshot(self, run_id: str, step: int, /, **arrays: Any) -> Path:
        """Save arrays to ``<run dir>/snapshot_<step>.npz`` (compressed) and record the artifact.

        Written to a temporary file and renamed, so a crash mid-save never leaves a truncated
        snapshot behind. Object arrays are refused here because ``load_snapshot`` reads with
        ``allow_pickle=False`` (pickles in run folders would be a code-execution hole).
        """
        if not arrays:
            raise ValueError("save_snapshot: give at least one array, e.g. features=...")
        data = {key: np.asarray(value) for key, value in arrays.items()}
        for key, value in data.items():
            if value.dtype.hasobject:
                raise ValueError(f"save_snapshot: array {key!r} has dtype object; convert it to a numeric dtype")
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        target = run_dir / f"snapshot_{int(step):08d}.npz"
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".snapshot-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **data)
            os.replace(tmp, target)
        except BaseException as err:
            with suppress(OSError):
                os.unlink(tmp)
            if isinstance(err, OSError) and (fault := store_fault(err, self.path)) is not None:
                raise fault from None  # disk full while writing the snapshot: one line, exit 1
            raise
        self.add_artifact(run_id, step, "snapshot", target)
        return target

    @staticmethod
    def load_snapshot(path: str | Path) -> dict[str, np.ndarray]:
        """Arrays of a snapshot, read eagerly (the file is closed on return), never unpickling."""
        with np.load(Path(path), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
