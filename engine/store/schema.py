"""Store constants, the one-line error type, and the schema with its migrations.

Schema version lives in ``PRAGMA user_version``: opening an older store migrates it in place,
inside one transaction, so a failed migration leaves the file as it was.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path

DB_NAME = "lab.db"
SCHEMA_VERSION = 3
STATUSES = ("running", "completed", "diverged", "stopped", "failed", "interrupted")
TERMINAL_STATUSES = tuple(s for s in STATUSES if s != "running")
BUSY_TIMEOUT_MS = 5000
EXIT_BAD_INPUT, EXIT_FAULT = 2, 1  # StoreError.exit_code values

# Run ids look like "r250101-120000-a1b2c3": they sort by creation time and are safe folder names.
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class StoreError(ValueError):
    """The store cannot be used as given. ``str(err)`` is one line naming the path and the fix.

    ``exit_code`` is what the CLI exits with. 2 (the default, a ``ValueError``: bad input) when
    the fix is different input — a path that cannot be used, a read-only store file or folder the
    user named, a newer schema, an unknown id. 1 when a usable store failed under a run because of
    its environment — disk full, an I/O error — where retrying the same command later can work.
    """

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[type[StoreError], tuple[str, int]]:
        # A sweep worker's error crosses a process boundary by pickling; keep the exit code.
        return (type(self), (str(self), self.exit_code))


def read_only_error(path: Path, why: str) -> StoreError:
    """The one message for "this store cannot be written" (exit 2: the user picks another path)."""
    return StoreError(f"store {path} is read-only ({why}); pass --store with a writable file "
                      "or set LAB_HOME to a writable folder")


def store_fault(err: BaseException, path: Path) -> StoreError | None:
    """The :class:`StoreError` for an SQLite or OS error that is the store's environment's fault
    (disk full, read-only, I/O error), or None for anything else (busy, a bug), which the caller
    re-raises unchanged.

    SQLite names its errors (``sqlite_errorname``, Python 3.11+); the message text is the
    fallback for older Pythons and for errors raised by tests.
    """
    if isinstance(err, sqlite3.Error):
        name = str(getattr(err, "sqlite_errorname", "") or "")
        text = str(err).lower()
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return disk_full_error(path, _one_line(err))
        if name.startswith("SQLITE_READONLY") or "readonly database" in text:
            return read_only_error(path, _one_line(err))
        if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
            return StoreError(f"store {path}: disk I/O error ({_one_line(err)}); check the disk and rerun",
                              EXIT_FAULT)
    elif isinstance(err, OSError):
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return disk_full_error(path, _one_line(err))
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return read_only_error(path, _one_line(err))
    return None


def disk_full_error(path: Path, detail: str) -> StoreError:
    """Disk full under a run (exit 1): the message says "disk full", which the run's row keeps."""
    return StoreError(f"store {path}: disk full ({detail}); free space on that disk or pass --store "
                      "with a file on another one", EXIT_FAULT)


def default_store_path() -> Path:
    """Where the store lives when no path is given: ``$LAB_HOME/lab.db``, else ``./runs/lab.db``."""
    home = os.environ.get("LAB_HOME", "").strip()
    if home:
        return Path(home).expanduser().absolute() / DB_NAME
    return Path.cwd() / "runs" / DB_NAME


def _one_line(err: BaseException) -> str:
    """An error as one line: its OS message when it has one (no errno prefix), whitespace folded."""
    return " ".join(str(getattr(err, "strerror", None) or err).split())


# --------------------------------------------------------------------------------------------
# Schema and migrations. MIGRATIONS[v] takes a store from version v-1 to v; a fresh store runs
# all of them, so new and migrated stores always end up with the same schema.
# --------------------------------------------------------------------------------------------

_V1_COLUMNS = {
    "id", "name", "preset", "config_json", "status", "message", "created_at", "finished_at",
    "device", "seed", "versions_json",
}

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS runs (
            id            TEXT PRIMARY KEY,
            name          TEXT,
            preset        TEXT,
            config_json   TEXT NOT NULL,
            status        TEXT NOT NULL,
            message       TEXT NOT NULL DEFAULT '',
            created_at    REAL NOT NULL,
            finished_at   REAL,
            device        TEXT,
            seed          INTEGER,
            versions_json TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE IF NOT EXISTS metrics (
            run_id TEXT NOT NULL,
            step   INTEGER NOT NULL,
            name   TEXT NOT NULL,
            value  REAL
        )""",
        """CREATE TABLE IF NOT EXISTS artifacts (
            run_id TEXT NOT NULL,
            step   INTEGER,
            kind   TEXT NOT NULL,
            path   TEXT NOT NULL
        )""",
    ),
    # v2: owner process (for interrupted-run detection), tags / sweep id, and the indexes that
    # keep per-run metric reads fast once the store holds many runs.
    2: (
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN hostname TEXT",
        "ALTER TABLE runs ADD COLUMN pid_start INTEGER",
        "ALTER TABLE runs ADD COLUMN tags_json TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE runs ADD COLUMN sweep_id TEXT",
        "CREATE INDEX IF NOT EXISTS metrics_run_name_step ON metrics (run_id, name, step)",
        "CREATE INDEX IF NOT EXISTS artifacts_run_kind ON artifacts (run_id, kind)",
        "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at)",
        "CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep_id)",
    ),
    # v3: sweeps. The grid a sweep was launched with (base config, axes in order, seeds) cannot be
    # recovered from its runs — a cell that never started has none — and resuming or drawing the
    # phase diagram needs it; runs point here through runs.sweep_id. Owner columns as for runs.
    3: (
        """CREATE TABLE IF NOT EXISTS sweeps (
            id          TEXT PRIMARY KEY,
            name        TEXT,
            preset      TEXT,
            spec_json   TEXT NOT NULL,
            backend     TEXT,
            status      TEXT NOT NULL,
            message     TEXT NOT NULL DEFAULT '',
            created_at  REAL NOT NULL,
            finished_at REAL,
            pid         INTEGER,
            hostname    TEXT,
            pid_start   INTEGER
        )""",
        "CREATE INDEX IF NOT EXISTS sweeps_created ON sweeps (created_at)",
    ),
}
assert max(MIGRATIONS) == SCHEMA_VERSION

_RUN_COLUMNS = (
    "id, name, preset, config_json, status, message, created_at, finished_at, device, seed, "
    "versions_json, pid, hostname, tags_json, sweep_id"
)
_SWEEP_COLUMNS = "id, name, preset, spec_json, backend, status, message, created_at, finished_at"
SWEEP_STATUSES = ("running", "completed", "stopped", "failed", "interrupted")
