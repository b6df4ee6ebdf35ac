"""The store's connections, opening (migration, recovery) and locking: what every part shares.

Why these choices:

* **WAL + synchronous=NORMAL** — readers (the UI, ``python -m engine list``, a second process)
  never block the training writer and vice versa, and a committed transaction survives a crash
  or SIGKILL of the process (only an OS crash / power loss can drop the last commits).
* **Read-only stores open read-only** — a store file, folder or filesystem we cannot write is
  opened with an SQLite ``file:...?mode=ro`` URI, and, when no ``-wal`` file exists (so no writer
  is connected), also ``immutable=1``: a plain read-only open of a WAL database creates ``-wal``
  and ``-shm`` files it can then never remove, leaving strays beside someone else's store. Writes
  to such a store raise a one-line :class:`StoreError`; ``writable=True`` raises it at open.
* **Store faults are one line** — disk full, read-only and I/O errors from SQLite or the OS
  become a :class:`StoreError` with an ``exit_code`` (see ``schema``), never a chain of
  ``sqlite3`` tracebacks.
* **One connection per thread** — ``sqlite3`` connections are not meant to be shared between
  threads; the trainer thread writes while UI threads read, each on its own connection.
  Connections of threads that have ended are closed lazily so a long-lived server does not leak.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol, Self

from engine.store.owners import _owner_alive
from engine.store.schema import (
    _RUN_ID_RE,
    _V1_COLUMNS,
    BUSY_TIMEOUT_MS,
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    StoreError,
    _one_line,
    default_store_path,
    read_only_error,
    store_fault,
)


class _Writer(Protocol):
    """What the store needs of an open metric writer: flush it before finishing its run, close it on close."""

    run_id: str
    closed: bool

    def flush(self) -> int: ...

    def close(self) -> None: ...


class StoreBase:
    """Connections and opening. Raises :class:`StoreError` when the path cannot be used.

    ``writable=True`` refuses a store that cannot be written right here, before any work (the CLI's
    ``run`` and ``sweep``); otherwise such a store opens read-only (``read_only`` is True) and
    only a write is refused — what ``list``, ``show``, ``export`` and the pages need.
    """

    def __init__(self, path: str | Path | None = None, *, writable: bool = False) -> None:
        path = default_store_path() if path is None else Path(path).expanduser()
        if path.is_dir():
            path = path / DB_NAME
        self.path: Path = path.absolute()
        self.root: Path = self.path.parent
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._writers: weakref.WeakSet[_Writer] = weakref.WeakSet()
        self._pid = os.getpid()
        self._closed = False
        why = self._unwritable()
        self.read_only: bool = why is not None
        if why is not None and (writable or not self.path.exists()):
            raise read_only_error(self.path, why)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"store {self.path}: cannot create folder {self.root} ({_one_line(err)}); "
                "pass --store PATH or set LAB_HOME to a writable folder"
            ) from None
        try:
            self._open()
        except StoreError:
            self.close()
            raise
        except sqlite3.DatabaseError as err:
            self.close()
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise  # a busy store is not bad input; let the caller retry
            if (fault := store_fault(err, self.path)) is not None:
                raise fault from None
            raise StoreError(
                f"store {self.path} cannot be used as an SQLite run store ({_one_line(err)}); "
                "pass --store with another file or set LAB_HOME to another folder"
            ) from None

    def _unwritable(self) -> str | None:
        """Why this store cannot be written by this process, or None if it can.

        ``os.access`` answers for the real user and the filesystem (a read-only mount says no even
        to root). The folder counts too: a WAL store writes its ``-wal`` file beside the database.
        """
        folder = self.root if self.root.is_dir() else None
        if folder is not None and hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only filesystem"
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return "the file is not writable"
        if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
            return f"its folder {folder} is not writable"
        return None

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so reads never hold a snapshot
        # open by accident and writes take the lock up front (BEGIN IMMEDIATE) where busy_timeout
        # applies. check_same_thread=False only so close() may close other threads' connections.
        target, uri = str(self.path), False
        if self.read_only:
            wal = self.path.with_name(self.path.name + "-wal")
            target, uri = self.path.as_uri() + "?mode=ro" + ("" if wal.exists() else "&immutable=1"), True
        conn = sqlite3.connect(
            target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False, uri=uri
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, created on first use."""
        if self._closed:
            raise ValueError(f"store {self.path} is closed")
        if os.getpid() != self._pid:
            # Forked child: SQLite connections must not cross fork(); start afresh.
            self._pid = os.getpid()
            self._local = threading.local()
            self._conns = []
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._prune_dead_threads()
                self._conns.append((weakref.ref(threading.current_thread()), conn))
        return conn

    def _prune_dead_threads(self) -> None:
        """Close connections of threads that have finished (e.g. Streamlit script-run threads)."""
        alive = []
        for ref, conn in self._conns:
            thread = ref()
            if thread is None or not thread.is_alive():
                with suppress(sqlite3.Error):
                    conn.close()
            else:
                alive.append((ref, conn))
        self._conns = alive

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken at BEGIN so busy_timeout applies.

        A store fault (disk full, read-only, I/O error) at any point becomes a one-line
        :class:`StoreError` with nothing chained; SQLite may already have rolled the transaction
        back on its own (it does on SQLITE_FULL), so ROLLBACK is only issued while one is open.
        """
        if self.read_only:
            raise read_only_error(self.path, self._unwritable() or "opened read-only")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            _rollback(conn)
            if (fault := store_fault(err, self.path)) is None:
                raise
            raise fault from None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one consistent snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Flush open metric writers and close every connection. Idempotent."""
        if self._closed:
            return
        for writer in list(self._writers):
            with suppress(Exception):
                writer.close()
        self._closed = True
        with self._lock:
            for _, conn in self._conns:
                with suppress(sqlite3.Error):
                    conn.close()
            self._conns = []
        self._local = threading.local()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- opening: migration and recovery --------------------------------------------------------

    def _open(self) -> None:
        """Check the version, migrate if needed, switch to WAL, recover dead runs.

        Only takes the write lock when there is something to write, so opening a store for
        reading while another process is writing does not wait.
        """
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this Regularization Lab "
                f"understands ({SCHEMA_VERSION}); upgrade the code or pass --store with another file"
            )
        if self.read_only:
            if version < SCHEMA_VERSION:
                raise read_only_error(self.path, f"its schema version {version} needs an upgrade to {SCHEMA_VERSION}, "
                                                 "which writes")
            return  # nothing to migrate, and dead runs stay as they are until a writer opens it
        if version < SCHEMA_VERSION:
            self._migrate()
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        self.recover_interrupted()

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
            if version == 0:
                version = self._classify_unversioned(conn)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _classify_unversioned(self, conn: sqlite3.Connection) -> int:
        """Version of a store with user_version 0: empty (0), a pre-versioning v1 store, or foreign."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return 0
        if "runs" in tables:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
            if columns.issuperset(_V1_COLUMNS) and tables.issuperset({"metrics", "artifacts"}):
                return 1
        raise StoreError(
            f"store {self.path} is an SQLite file but not a run store (tables: {', '.join(sorted(tables))}); "
            "pass --store with another file"
        )

    def recover_interrupted(self) -> list[str]:
        """Mark ``running`` runs whose owner process is gone as ``interrupted``; return their ids.

        Runs on every open; callable again at any time (e.g. by a UI that stays up for days).
        """
        conn = self._conn()
        rows = conn.execute(
            "SELECT id, pid, hostname, pid_start FROM runs WHERE status = 'running'"
        ).fetchall()
        dead = [row for row in rows if not _owner_alive(*row)]
        dead_sweeps = [row for row in conn.execute(
            "SELECT id, pid, hostname, pid_start FROM sweeps WHERE status = 'running'"
        ).fetchall() if not _owner_alive(*row)]
        if not dead and not dead_sweeps:
            return []
        now = time.time()
        with self._write() as conn:
            for sweep_id, pid, hostname, _ in dead_sweeps:
                conn.execute(
                    "UPDATE sweeps SET status = 'interrupted', message = ?, finished_at = ? "
                    "WHERE id = ? AND status = 'running'",
                    (f"interrupted: process {pid} on {hostname} ended before the sweep did; resume it", now,
                     sweep_id),
                )
            for run_id, pid, hostname, _ in dead:
                owner = f"process {pid} on {hostname}" if pid is not None else "its process (unknown pid)"
                conn.execute(
                    "UPDATE runs SET status = 'interrupted', message = ?, finished_at = COALESCE(finished_at, ?) "
                    "WHERE id = ? AND status = 'running'",
                    (f"interrupted: {owner} ended without finishing the run", now, run_id),
                )
        return [row[0] for row in dead]

    def run_dir(self, run_id: str) -> Path:
        """The run's folder ``<store dir>/<run_id>/`` (not created here)."""
        if not _RUN_ID_RE.fullmatch(run_id) or run_id in {".", ".."}:
            raise ValueError(f"run id {run_id!r} is not a valid folder name")
        return self.root / run_id


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any, without letting a failed rollback hide the error."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
