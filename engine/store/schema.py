"""Store constants, the one-line error type, and the schema with its migrations.

Schema version lives in ``PRAGMA user_version``: opening an older store migrates it in place,
inside one transaction, so a failed migration leaves the file as it was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DB_NAME = "lab.db"
SCHEMA_VERSION = 3
STATUSES = ("running", "completed", "diverged", "stopped", "failed", "interrupted")
TERMINAL_STATUSES = tuple(s for s in STATUSES if s != "running")
BUSY_TIMEOUT_MS = 5000

# Run ids look like "r250101-120000-a1b2c3": they sort by creation time and are safe folder names.
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class StoreError(ValueError):
    """The store cannot be used as given. ``str(err)`` is one line naming the path and the fix.

    A ``ValueError`` so the CLI treats it as bad input (exit code 2, no traceback).
    """


def default_store_path() -> Path:
    """Where the store lives when no path is given: ``$LAB_HOME/lab.db``, else ``./runs/lab.db``."""
    home = os.environ.get("LAB_HOME", "").strip()
    if home:
        return Path(home).expanduser().absolute() / DB_NAME
    return Path.cwd() / "runs" / DB_NAME


def _one_line(err: BaseException) -> str:
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
