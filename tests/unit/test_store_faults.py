"""Store faults through the CLI: a read-only store file or folder, and a disk that fills mid-run.

Each case asserts the exit code, a one-line ``error:`` on stderr (no traceback), that no stray
``-wal``/``-shm`` files appear beside a read-only store, and ``PRAGMA integrity_check`` = ok.

Tests run as root here, where ``chmod`` does not stop writes. So a read-only store is a
read-only bind mount when this process may mount, ``chmod`` when it is not root, and otherwise
a monkeypatched ``os.access`` (which is what the store asks). The full disk is a 2 MB tmpfs when
mounting works, and in every environment also a connection wrapper that raises SQLite's own
"database or disk is full" error.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

import engine.store as store_module
from engine.cli import main
from engine.store import RunStore, StoreError
from engine.store.base import StoreBase
from engine.store.metrics import MetricsMixin

# A 30-step moons MLP: trains in well under a second.
MOONS = {"data": {"name": "moons", "n_train": 200, "n_test": 200}, "model": {"width": 32},
         "optim": {"name": "sgd", "lr": 1.0}, "train": {"steps": 30, "eval_every": 10}}


def _config(tmp_path: Path, **train: int) -> str:
    path = tmp_path / f"moons-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({**MOONS, "train": {**MOONS["train"], **train}}))
    return str(path)


def _seed_store(folder: Path) -> str:
    """A store with one finished run (with metrics), closed cleanly (no -wal/-shm left)."""
    folder.mkdir(parents=True, exist_ok=True)
    with RunStore(folder / "lab.db") as store:
        run_id = store.create_run({"seed": 0}, name="seeded")
        with store.metric_writer(run_id) as writer:
            writer.add_many(0, {"train/loss": 1.0, "test/acc": 0.5})
        store.finish_run(run_id, "completed", "done")
    assert sorted(p.name for p in folder.iterdir()) == ["lab.db"]
    return run_id


def _integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` through a read-only connection that creates no files."""
    conn = sqlite3.connect(db.as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _run(*argv: str) -> int:
    return main(list(argv))


# -- making a store read-only -------------------------------------------------------------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@contextmanager
def read_only(target: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Make ``target`` (the store file or its folder) read-only; yields how it was done."""
    if os.geteuid() != 0:
        mode = target.stat().st_mode
        target.chmod(0o555 if target.is_dir() else 0o444)
        try:
            yield "chmod"
        finally:
            target.chmod(mode)
        return
    if _mount("--bind", str(target), str(target)):
        if _mount("-o", "remount,bind,ro", str(target)):
            try:
                yield "mount"
            finally:
                assert _mount_undo(target), f"could not unmount {target}"
            return
        assert _mount_undo(target), f"could not unmount {target}"
    # Root without mount rights: the store asks os.access, so answer "not writable" for target.
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        inside = Path(str(path)) == target or target in Path(str(path)).parents
        if mode & os.W_OK and inside:
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    try:
        yield "os.access"
    finally:
        monkeypatch.undo()


def _mount_undo(target: Path) -> bool:
    """Unmount; lazily when busy (the CLI's store objects in this process may still hold the file)."""
    for args in (["umount", str(target)], ["umount", "-l", str(target)]):
        if subprocess.run(args, capture_output=True, check=False).returncode == 0:
            return True
    return False


@pytest.mark.parametrize("what", ["file", "folder"])
def test_run_into_a_read_only_store_is_one_line_exit_2(what, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "store"
    _seed_store(folder)
    db = folder / "lab.db"
    config = _config(tmp_path)
    with read_only(db if what == "file" else folder, monkeypatch):
        rc = _run("run", "--config", config, "--store", str(db), "--quiet")
        listing = sorted(p.name for p in folder.iterdir())
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "read-only" in line and str(db) in line and "--store" in line
    assert listing == ["lab.db"]  # no -wal/-shm, no run folder: refused before any work
    assert _integrity(db) == "ok"
    with RunStore(db) as store:
        assert [r["name"] for r in store.list_runs()] == ["seeded"]


@pytest.mark.parametrize("what", ["file", "folder"])
def test_list_show_export_read_a_read_only_store_without_stray_files(what, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "store"
    run_id = _seed_store(folder)
    db = folder / "lab.db"
    out = tmp_path / "export"
    with read_only(db if what == "file" else folder, monkeypatch):
        assert _run("list", "--store", str(db)) == 0
        listed = capsys.readouterr().out
        assert _run("show", run_id, "--store", str(db), "--json") == 0
        shown = json.loads(capsys.readouterr().out)
        assert _run("export", run_id, "--format", "csv", "--out", str(out), "--store", str(db)) == 0
        listing = sorted(p.name for p in folder.iterdir())
        with RunStore(db) as store:  # the library's default open: read-only, writes refused in one line
            assert store.read_only
            with pytest.raises(StoreError, match="read-only") as info:
                store.create_run({"seed": 1})
            assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert run_id in listed
    assert shown["status"] == "completed" and shown["final"]["train/loss"] == 1.0
    assert any(p.name.endswith("metrics.csv") for p in out.iterdir())
    assert listing == ["lab.db"]
    assert _integrity(db) == "ok"


CRASHED_WRITER = """
import sys, time
from engine.store import RunStore
store = RunStore(sys.argv[1])
run_id = store.create_run({"seed": 0}, name="crashed")
store.metric_writer(run_id, max_buffer=1).add(1, "train/loss", 0.5)
print(run_id, flush=True)
time.sleep(60)
"""


def test_a_crashed_writers_wal_is_read_from_a_read_only_store(tmp_path, monkeypatch, capsys):
    """With a ``-wal`` left beside it the store cannot be opened ``immutable`` (that would skip the
    WAL's rows); the plain ``mode=ro`` open reads them and adds no file."""
    folder = tmp_path / "store"
    folder.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", CRASHED_WRITER, str(folder / "lab.db")],
                              stdout=subprocess.PIPE, text=True)
    try:
        run_id = writer.stdout.readline().strip()
    finally:
        writer.kill()
        writer.wait(timeout=30)
        writer.stdout.close()
    before = sorted(p.name for p in folder.iterdir())
    assert run_id and "lab.db-wal" in before
    with read_only(folder, monkeypatch):
        assert _run("show", run_id, "--store", str(folder / "lab.db"), "--json") == 0
        shown = json.loads(capsys.readouterr().out)
        after = sorted(p.name for p in folder.iterdir())
    assert shown["final"] == {"train/loss": 0.5}  # the row lives only in the -wal
    assert after == before


def test_writable_open_of_a_read_only_store_fails_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    _seed_store(folder)
    with read_only(folder, monkeypatch), pytest.raises(StoreError) as info:
        RunStore(folder / "lab.db", writable=True)
    assert info.value.exit_code == 2 and "read-only" in str(info.value)
    # a store that does not exist yet in a read-only folder cannot be created either
    with read_only(folder, monkeypatch), pytest.raises(StoreError, match="read-only"):
        RunStore(folder / "other.db")


# -- disk full ------------------------------------------------------------------------------------


class FullDisk:
    """A connection that starts failing with SQLite's SQLITE_FULL message once ``full()`` says so.

    ``what`` picks the writes that fail: ``"metrics"`` (batched inserts only: the store can still
    take the small update that marks the run failed) or ``"all"`` (nothing can be written).
    """

    def __init__(self, conn: sqlite3.Connection, full: Callable[[], bool], what: str) -> None:
        self._conn, self._full, self._what = conn, full, what

    def _check(self, sql: str, many: bool) -> None:
        if not self._full():
            return
        write = sql.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")
        if (self._what == "metrics" and many) or (self._what == "all" and write):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        self._check(sql, many=False)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        self._check(sql, many=True)
        return self._conn.executemany(sql, rows)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def _fill_after_flushes(monkeypatch: pytest.MonkeyPatch, what: str, ok_flushes: int) -> list[int]:
    """Writers flush every ~20 rows; the disk is full from flush ``ok_flushes + 1`` on.

    Returns the list the sizes of the flushes that were written are appended to.
    """
    flushes, written = {"n": 0}, []
    real_connect = StoreBase._connect
    real_insert = MetricsMixin._insert_metrics
    real_writer = MetricsMixin.metric_writer

    def connect(self: StoreBase) -> sqlite3.Connection:
        return FullDisk(real_connect(self), lambda: flushes["n"] > ok_flushes, what)  # type: ignore[return-value]

    def insert(self: MetricsMixin, rows: list) -> None:
        flushes["n"] += 1
        real_insert(self, rows)
        written.append(len(rows))

    monkeypatch.setattr(StoreBase, "_connect", connect)
    monkeypatch.setattr(MetricsMixin, "_insert_metrics", insert)
    monkeypatch.setattr(MetricsMixin, "metric_writer",
                        lambda self, run_id, flush_every_s=0.5, max_buffer=20: real_writer(self, run_id, 60.0, 20))
    return written


def test_disk_full_mid_run_marks_the_run_failed_and_keeps_its_metrics(tmp_path, monkeypatch, capsys):
    db = tmp_path / "lab.db"
    written = _fill_after_flushes(monkeypatch, "metrics", ok_flushes=3)
    rc = _run("run", "--config", _config(tmp_path), "--store", str(db), "--quiet")
    line = _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()
    assert rc == 1 and "disk full" in line and str(db) in line
    with RunStore(db) as store:
        (run,) = store.list_runs()
        assert run["status"] == "failed" and "disk full" in run["message"]
        kept = sum(len(steps) for steps, _ in store.metrics(run["id"]).values())
        assert len(written) == 3 and kept == sum(written)  # the flushes before the fault, nothing after
    assert _integrity(db) == "ok"


def test_disk_full_with_nothing_writable_leaves_the_run_for_recovery(tmp_path, monkeypatch, capsys):
    db = tmp_path / "lab.db"
    written = _fill_after_flushes(monkeypatch, "all", ok_flushes=2)
    rc = _run("run", "--config", _config(tmp_path), "--store", str(db), "--quiet")
    line = _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()
    assert rc == 1 and "disk full" in line
    with RunStore(db) as store:
        (run,) = store.list_runs()
        assert run["status"] == "running"  # this process still owns it, so it is not yet recovered
        assert len(written) == 2 and sum(len(steps) for steps, _ in store.metrics(run["id"]).values()) == sum(written)
    store_module._OWN_RUNS.discard(run["id"])  # as if this process had exited
    with RunStore(db) as store:
        assert store.get_run(run["id"])["status"] == "interrupted"
    assert _integrity(db) == "ok"


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root with mount rights only)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a tmpfs here (needs root with mount rights); the monkeypatched cases cover it")
    try:
        yield mnt
    finally:
        assert _mount_undo(mnt), f"could not unmount {mnt}"


def test_disk_full_on_a_real_tmpfs(tiny_tmpfs, tmp_path, monkeypatch, capsys):
    db = tiny_tmpfs / "lab.db"
    _seed_store(tiny_tmpfs)
    free = os.statvfs(tiny_tmpfs).f_bavail * os.statvfs(tiny_tmpfs).f_frsize
    (tiny_tmpfs / "filler").write_bytes(b"\0" * max(0, free - 200_000))  # leave ~200 kB
    real_writer = MetricsMixin.metric_writer  # flush every 200 rows, so several flushes land before the disk fills
    monkeypatch.setattr(MetricsMixin, "metric_writer",
                        lambda self, run_id, flush_every_s=0.5, max_buffer=200: real_writer(self, run_id, 60.0, 200))
    rc = _run("run", "--config", _config(tmp_path, steps=4000, eval_every=5), "--store", str(db), "--quiet")
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 1 and "disk full" in line
    (tiny_tmpfs / "filler").unlink()
    assert _integrity(db) == "ok"
    with RunStore(db) as store:
        run = next(r for r in store.list_runs() if r["name"] != "seeded")
        assert run["status"] == "failed" and "disk full" in run["message"]
        assert store.metrics(run["id"])["train/loss"][0].size > 0  # what was flushed before the fault is kept


def test_store_error_keeps_its_exit_code_across_processes():
    import pickle  # the process pool pickles a worker's error (our own object, not user data)

    err = pickle.loads(pickle.dumps(StoreError("store x: disk full", 1)))
    assert isinstance(err, StoreError) and err.exit_code == 1 and str(err) == "store x: disk full"
    assert StoreError("bad").exit_code == 2


def test_read_only_error_from_sqlite_is_translated(tmp_path):
    with RunStore(tmp_path / "lab.db") as store:
        conn = store._conn()
        with suppress(sqlite3.Error):
            conn.execute("PRAGMA query_only = ON")  # SQLite then refuses writes as a read-only store would
        with pytest.raises(StoreError, match="read-only") as info:
            store.create_run({"seed": 0})
    assert "\n" not in str(info.value) and info.value.exit_code == 2
