"""SQLite run store: runs, their metrics and artifacts, and ``.npz`` snapshots beside them.

Layout::

    <store dir>/lab.db          runs, metrics, artifacts, sweeps tables (WAL mode)
    <store dir>/<run_id>/       per-run folder: snapshots (*.npz) and other artifact files

The default file is ``runs/lab.db`` under the working directory; ``$LAB_HOME`` (a *directory*,
the file is ``$LAB_HOME/lab.db``) or an explicit path overrides it. An explicit path that is an
existing directory means ``<that dir>/lab.db``.

Why these choices:

* **WAL + synchronous=NORMAL** — readers (the UI, ``python -m engine list``, a second process)
  never block the training writer and vice versa, and a committed transaction survives a crash
  or SIGKILL of the process (only an OS crash / power loss can drop the last commits). Nothing a
  dying process does can corrupt rows that were already committed.
* **Buffered metric writes** — a run can log ~10k metric rows/s (2 kHz x 5 metrics). One
  transaction per row would stall training on fsync; :class:`MetricWriter` buffers rows and writes
  each batch with a single ``executemany`` inside one transaction.
* **One connection per thread** — ``sqlite3`` connections are not meant to be shared between
  threads; the trainer thread writes while UI threads read, each on its own connection.
  Connections of threads that have ended are closed lazily so a long-lived server does not leak.
* **Schema version in ``PRAGMA user_version``** — opening an older store migrates it in place,
  inside one transaction, so a failed migration leaves the file as it was.
* **Owner pid/hostname per run** — a run left ``running`` by a process that died (SIGKILL, OOM,
  closed laptop) is marked ``interrupted`` the next time any process opens the store.

Non-finite metric values: SQLite cannot store NaN (it becomes NULL), so NaN is written as NULL
and read back as ``nan``; ``±inf`` is stored as a REAL and read back as ``±inf``. A diverged run
therefore keeps its last, non-finite loss visible in ``metrics()`` and ``final_metrics()``.

Timestamps (``created_at``, ``finished_at``) are Unix seconds (float, UTC).

Modules: ``schema`` (constants, migrations, :class:`StoreError`), ``owners`` (owner-process
liveness), ``base`` (connections, opening, recovery), ``runs``, ``sweeps``, ``metrics``,
``artifacts`` — one mixin per table, combined into :class:`RunStore` here.
"""

from __future__ import annotations

from engine.store.artifacts import ArtifactsMixin
from engine.store.base import StoreBase
from engine.store.metrics import MetricsMixin, MetricWriter
from engine.store.owners import _HOSTNAME as _HOSTNAME
from engine.store.owners import _OWN_RUNS as _OWN_RUNS
from engine.store.owners import _OWN_RUNS_LOCK as _OWN_RUNS_LOCK
from engine.store.owners import _owner_alive as _owner_alive
from engine.store.owners import _process_start_ticks as _process_start_ticks
from engine.store.runs import RunsMixin
from engine.store.schema import (
    DB_NAME,
    SCHEMA_VERSION,
    STATUSES,
    SWEEP_STATUSES,
    TERMINAL_STATUSES,
    StoreError,
    default_store_path,
)
from engine.store.schema import MIGRATIONS as MIGRATIONS
from engine.store.sweeps import SweepsMixin

# The redundant ``X as X`` imports above keep the owner-liveness internals and MIGRATIONS reachable
# as ``engine.store.<name>``, as they were when the store was one module (tests use them).

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "SWEEP_STATUSES",
    "TERMINAL_STATUSES",
    "MetricWriter",
    "RunStore",
    "StoreError",
    "default_store_path",
]


class RunStore(RunsMixin, SweepsMixin, MetricsMixin, ArtifactsMixin, StoreBase):
    """The SQLite run store. Opening it creates or migrates the file and recovers dead runs.

    ``path`` is the database file (or a directory that holds ``lab.db``); None means
    :func:`default_store_path`. Raises :class:`StoreError` when the path cannot be used.
    """

