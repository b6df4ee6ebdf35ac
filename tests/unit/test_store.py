"""Tests of the SQLite run store (engine/store/): round trips, batching, concurrency, crash safety.

The crash and second-process tests run real subprocesses because that is where SQLite stores
usually break (locks, WAL visibility, half-written transactions), not in single-process code.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import engine.store as store_module
from engine.store import (
    SCHEMA_VERSION,
    MetricWriter,
    RunStore,
    StoreError,
    default_store_path,
)

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """Start ``python -c code`` with the repo importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True, **kwargs)


@pytest.fixture
def store(tmp_path: Path):
    s = RunStore(tmp_path / "lab.db")
    yield s
    s.close()


def _make_run(store: RunStore, **kwargs) -> str:
    args = {"config": {"optim": {"lr": 0.1}, "seed": 3}, "name": "demo", "preset": "noisy-labels",
            "device": "cpu", "seed": 3, "versions": {"torch": "2.13.0"}}
    args.update(kwargs)
    return store.create_run(**args)


# -- paths -------------------------------------------------------------------------------------


def test_default_path_uses_lab_home_as_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "lab.db"
    monkeypatch.delenv("LAB_HOME")
    monkeypatch.chdir(tmp_path)
    assert default_store_path() == tmp_path / "runs" / "lab.db"
    with RunStore() as s:
        assert s.path == tmp_path / "runs" / "lab.db"
    assert (tmp_path / "runs" / "lab.db").is_file()


def test_directory_path_means_lab_db_inside(tmp_path):
    with RunStore(tmp_path) as s:
        assert s.path == tmp_path / "lab.db"


# -- runs --------------------------------------------------------------------------------------


def test_create_finish_list_show_round_trip(store):
    rid = _make_run(store, tags=["baseline"])
    assert rid.startswith("r") and len(rid) <= 24
    run = store.get_run(rid)
    assert run["status"] == "running"
    assert run["config"] == {"optim": {"lr": 0.1}, "seed": 3}
    assert run["versions"] == {"torch": "2.13.0"}
    assert (run["name"], run["preset"], run["device"], run["seed"]) == ("demo", "noisy-labels", "cpu", 3)
    assert run["pid"] == os.getpid() and run["hostname"]
    assert run["finished_at"] is None and run["tags"] == ["baseline"]

    store.finish_run(rid, "completed", "done in 10 steps")
    run = store.get_run(rid[:-2])  # a unique prefix works
    assert run["id"] == rid
    assert (run["status"], run["message"]) == ("completed", "done in 10 steps")
    assert run["finished_at"] >= run["created_at"]

    other = _make_run(store, preset="sam", sweep_id="s1")
    store.set_status(other, "stopped", "user pressed stop")
    store.rename_run(other, "renamed")
    store.add_tags(other, "ab", "baseline")
    assert [r["id"] for r in store.list_runs()] == [other, rid]  # newest first
    assert [r["id"] for r in store.list_runs(limit=1)] == [other]
    assert [r["id"] for r in store.list_runs(status="completed")] == [rid]
    assert [r["id"] for r in store.list_runs(preset="sam")] == [other]
    assert [r["id"] for r in store.list_runs(tag="baseline")] == [other, rid]
    assert [r["id"] for r in store.list_runs(tag="ab")] == [other]
    assert [r["id"] for r in store.list_runs(sweep_id="s1")] == [other]
    assert store.get_run(other)["name"] == "renamed"
    assert store.get_run(other)["finished_at"] is None  # set_status does not finish
    assert store.get_run("nope") is None


def test_bad_status_and_unknown_run_are_value_errors(store):
    rid = _make_run(store)
    with pytest.raises(ValueError, match="status"):
        store.finish_run(rid, "exploded")
    with pytest.raises(ValueError, match="running"):
        store.finish_run(rid, "running")
    with pytest.raises(StoreError, match="unknown run id"):
        store.finish_run("r000000-000000-000000", "completed")
    with pytest.raises(StoreError, match="unknown run id"):
        store.rename_run("missing", "x")


def test_ambiguous_prefix_is_reported(store):
    _make_run(store), _make_run(store)
    with pytest.raises(StoreError, match="several runs"):
        store.get_run("r")  # every id starts with "r"


def test_run_ids_are_unique_and_sortable(store):
    ids = [store.create_run({}) for _ in range(50)]
    assert len(set(ids)) == 50
    stamps = [i[:14] for i in ids]  # "rYYMMDD-HHMMSS": sorts by creation time (second resolution)
    assert stamps == sorted(stamps)


# -- metrics -----------------------------------------------------------------------------------


def test_writer_batches_20k_rows_into_few_transactions(store):
    rid = _make_run(store)
    begins: list[str] = []
    # Trace the statements of the connection the writer will use (this thread's).
    store._conn().set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN IMMEDIATE") else None)
    writer = store.metric_writer(rid, flush_every_s=3600, max_buffer=5000)
    names = ["train/loss", "train/acc", "test/loss", "test/acc", "lr"]
    for step in range(4000):  # 4000 steps x 5 metrics = 20k rows
        writer.add_many(step, {name: step + i / 10 for i, name in enumerate(names)})
    writer.close()
    store._conn().set_trace_callback(None)

    assert writer.rows_written == 20_000
    assert writer.flushes == 4 == len(begins)  # one transaction per 5000-row batch, none per row
    data = store.metrics(rid)
    assert sorted(data) == sorted(names) == store.metric_names(rid)
    steps, values = data["test/loss"]
    assert steps.dtype == np.int64 and values.dtype == np.float64
    np.testing.assert_array_equal(steps, np.arange(4000))
    np.testing.assert_allclose(values, np.arange(4000) + 0.2)
    assert store.final_metrics(rid)["lr"] == pytest.approx(3999.4)
    assert store.metrics(rid, names=["lr"], since_step=3997)["lr"][0].tolist() == [3998, 3999]


def test_writer_with_default_settings_flushes_rarely(store):
    rid = _make_run(store)
    writer = store.metric_writer(rid)  # flush_every_s=0.5, max_buffer=5000
    for step in range(4000):
        writer.add_many(step, {"train/loss": 1.0, "train/acc": 0.5, "lr": 0.1, "grad/norm": 2.0, "weights/norm": 3.0})
    writer.close()
    assert writer.rows_written == 20_000
    assert writer.flushes <= 20  # ≥ 4 for size; time-based flushes add a few at most on a slow machine
    assert writer.pending == 0
    with pytest.raises(ValueError, match="closed"):
        writer.add(1, "lr", 0.1)


def test_time_based_flush_and_finish_flushes_writer(store):
    rid = _make_run(store)
    writer = store.metric_writer(rid, flush_every_s=0.0, max_buffer=10**6)
    writer.add(0, "train/loss", 1.0)
    assert writer.pending == 0 and writer.flushes == 1  # flush_every_s=0: every add is written

    lazy = store.metric_writer(rid, flush_every_s=3600, max_buffer=10**6)
    lazy.add(1, "train/loss", 0.5)
    assert lazy.pending == 1
    store.finish_run(rid, "completed")  # a reader seeing "completed" must also see the last metrics
    assert store.final_metrics(rid) == {"train/loss": 0.5}


def test_non_finite_values_stay_readable(store):
    rid = _make_run(store)
    with store.metric_writer(rid) as writer:
        writer.add(0, "train/loss", 1.0)
        writer.add(1, "train/loss", float("inf"))
        writer.add(2, "train/loss", float("-inf"))
        writer.add(3, "train/loss", float("nan"))
        writer.add(0, "grad/norm", np.float32(2.5))  # numpy scalars are fine
    steps, values = store.metrics(rid)["train/loss"]
    assert steps.tolist() == [0, 1, 2, 3]
    assert values[0] == 1.0 and values[1] == math.inf and values[2] == -math.inf and math.isnan(values[3])
    final = store.final_metrics(rid)
    assert math.isnan(final["train/loss"]) and final["grad/norm"] == 2.5
    # NaN is stored as NULL (SQLite has no NaN), inf as a REAL.
    raw = sqlite3.connect(store.path).execute(
        "SELECT step, value FROM metrics WHERE name = 'train/loss' ORDER BY step").fetchall()
    assert raw[3] == (3, None) and raw[1] == (1, math.inf)


def test_threads_write_and_read_concurrently(store):
    ids = [_make_run(store) for _ in range(4)]
    errors: list[BaseException] = []

    def work(rid: str) -> None:
        try:
            with store.metric_writer(rid, flush_every_s=0.0, max_buffer=50) as writer:
                for step in range(300):
                    writer.add(step, "train/loss", step)
                    if step % 50 == 0:
                        store.list_runs()
            store.finish_run(rid, "completed")
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(rid,)) for rid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for rid in ids:
        assert store.get_run(rid)["status"] == "completed"
        assert store.metrics(rid)["train/loss"][0].size == 300
    # Opening a connection in a new thread closes those of the finished threads (no leak in a server).
    late = threading.Thread(target=store.list_runs)
    late.start()
    late.join()
    assert len(store._conns) == 2  # the main thread's and the late thread's


# -- a second process --------------------------------------------------------------------------

READER = """
import json, sys
from engine.store import RunStore
store = RunStore(sys.argv[1])
run = store.get_run(sys.argv[2])
data = store.metrics(sys.argv[2])
print(json.dumps({"status": run["status"], "name": run["name"],
                  "n": {k: int(v[0].size) for k, v in data.items()}}))
store.close()
"""


def test_second_process_reads_while_this_one_writes(store):
    rid = _make_run(store)
    with store.metric_writer(rid) as writer:
        for step in range(1000):
            writer.add_many(step, {"train/loss": 1 / (step + 1), "train/acc": step / 1000})
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    # Hold an open write transaction with an uncommitted row: with WAL the reader neither waits
    # (it would time out after busy_timeout otherwise) nor sees the uncommitted row.
    conn = store._conn()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO metrics (run_id, step, name, value) VALUES (?, 5000, 'train/loss', 0.0)", (rid,))
    try:
        start = time.monotonic()
        proc = _python(READER, str(store.path), rid, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert time.monotonic() - start < 4.5  # did not sit out the 5 s busy timeout
    finally:
        conn.execute("ROLLBACK")
    assert json.loads(out) == {"status": "running", "name": "demo", "n": {"train/acc": 1000, "train/loss": 1000}}


# -- crash safety ------------------------------------------------------------------------------

VICTIM = """
import sys
from engine.store import RunStore
store = RunStore(sys.argv[1])
rid = store.create_run({"optim": {"lr": 0.1}}, name="victim")
writer = store.metric_writer(rid, flush_every_s=0.0)  # one transaction per step: many chances to die mid-write
print(rid, flush=True)
step = 0
while True:
    metrics = {"train/loss": 1.0 / (step + 1), "train/acc": 0.5, "test/loss": 2.0, "test/acc": 0.4, "lr": 0.1}
    writer.add_many(step, metrics)
    step += 1
    if step % 200 == 0:
        print(writer.rows_written, flush=True)
"""


def test_sigkill_mid_write_leaves_a_readable_store_and_an_interrupted_run(tmp_path):
    path = tmp_path / "lab.db"
    proc = _python(VICTIM, str(path), stdout=subprocess.PIPE)
    try:
        rid = proc.stdout.readline().strip()
        assert rid, "victim did not start"
        flushed = 0
        while flushed < 3000:
            line = proc.stdout.readline()
            assert line, "victim died on its own"
            flushed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)  # reap it: a zombie still answers os.kill(pid, 0)
    assert proc.returncode == -signal.SIGKILL

    with RunStore(path) as store:
        assert store._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = store.get_run(rid)
        assert run["status"] == "interrupted"
        assert str(run["pid"]) in run["message"] and run["finished_at"] is not None
        data = store.metrics(rid)
        n = data["train/loss"][0].size
        assert n >= flushed // 5  # everything reported as flushed is there
        # each step was one transaction: all five metrics of a step are present, or none
        assert {name: v[0].size for name, v in data.items()} == dict.fromkeys(
            ["lr", "test/acc", "test/loss", "train/acc", "train/loss"], n)
        np.testing.assert_array_equal(data["train/loss"][0], np.arange(n))


def test_runs_of_dead_owners_are_interrupted_on_open_live_ones_are_not(tmp_path):
    path = tmp_path / "lab.db"
    with RunStore(path) as store:
        mine = _make_run(store)
        dead_child = _python("pass")
        dead_child.wait()
        orphan = _make_run(store)
        stale = _make_run(store)
        with store._write() as conn:
            conn.execute("UPDATE runs SET pid = ?, pid_start = NULL WHERE id = ?", (dead_child.pid, orphan))
            # same pid as ours but not created by this process: an earlier process with a reused pid
            conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (os.getpid(), stale))
        store_module._OWN_RUNS.discard(stale)

    with RunStore(path) as store:
        assert store.get_run(mine)["status"] == "running"  # owner (this process) is alive
        assert store.get_run(orphan)["status"] == "interrupted"
        assert store.get_run(stale)["status"] == "interrupted"
        assert f"process {dead_child.pid}" in store.get_run(orphan)["message"]


# -- schema versions ---------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, preset TEXT, config_json TEXT NOT NULL, status TEXT NOT NULL,
                   message TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, finished_at REAL, device TEXT,
                   seed INTEGER, versions_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE metrics (run_id TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, value REAL);
CREATE TABLE artifacts (run_id TEXT NOT NULL, step INTEGER, kind TEXT NOT NULL, path TEXT NOT NULL);
INSERT INTO runs VALUES ('r1', 'old', 'sam', '{"seed": 1}', 'completed', 'ok', 1.0, 2.0, 'cpu', 1, '{}');
INSERT INTO runs VALUES ('r2', 'crashed', 'sam', '{}', 'running', '', 3.0, NULL, 'cpu', 2, '{}');
INSERT INTO metrics VALUES ('r1', 0, 'train/loss', 2.0), ('r1', 1, 'train/loss', 1.0), ('r1', 1, 'lr', 0.1);
INSERT INTO artifacts VALUES ('r1', 1, 'snapshot', 'r1/snapshot_00000001.npz');
"""


def _make_v1(path: Path, user_version: int | None = 1) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    if user_version is not None:
        conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("user_version", [1, None], ids=["v1", "unversioned-v1"])
def test_v1_store_is_migrated(tmp_path, user_version):
    path = tmp_path / "lab.db"
    _make_v1(path, user_version)
    with RunStore(path) as store:
        conn = store._conn()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        assert {"pid", "hostname", "tags_json", "sweep_id"} <= columns
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "metrics_run_name_step" in indexes
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

        old = store.get_run("r1")
        assert (old["name"], old["status"], old["config"], old["tags"]) == ("old", "completed", {"seed": 1}, [])
        assert store.final_metrics("r1") == {"lr": 0.1, "train/loss": 1.0}
        assert store.artifacts("r1")[0]["path"] == str(tmp_path / "r1" / "snapshot_00000001.npz")
        assert store.get_run("r2")["status"] == "interrupted"  # v1 had no owner pid: nobody can finish it
        new = _make_run(store)
        store.finish_run(new, "completed")
    with RunStore(path) as store:  # reopening a current store is a no-op
        assert {r["id"] for r in store.list_runs()} == {"r1", "r2", new}


def test_newer_store_is_refused_untouched(tmp_path):
    path = tmp_path / "lab.db"
    _make_v1(path, user_version=SCHEMA_VERSION + 1)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer") as info:
        RunStore(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before


def test_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a run store"):
        RunStore(path)
    assert path.read_bytes() == before


# -- bad paths ---------------------------------------------------------------------------------


def test_bad_paths_raise_one_line_store_errors(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as info:
        RunStore(blocker / "sub" / "lab.db")
    message = str(info.value)
    assert "\n" not in message and str(blocker / "sub" / "lab.db") in message and "--store" in message
    assert isinstance(info.value, ValueError)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all\n" * 100)
    with pytest.raises(StoreError) as info:
        RunStore(garbage)
    message = str(info.value)
    assert "\n" not in message and str(garbage) in message and "--store" in message
    assert garbage.read_bytes() == b"this is not sqlite at all\n" * 100


# -- delete, artifacts, snapshots --------------------------------------------------------------


def test_delete_removes_rows_and_folder(store):
    keep, gone = _make_run(store), _make_run(store)
    for rid in (keep, gone):
        with store.metric_writer(rid) as writer:
            writer.add(0, "train/loss", 1.0)
        store.save_snapshot(rid, 0, features=np.zeros((3, 2)))
    assert store.run_dir(gone).is_dir()

    assert store.delete_run(gone) is True
    assert store.get_run(gone) is None
    assert not store.run_dir(gone).exists()
    conn = store._conn()
    for table in ("metrics", "artifacts"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (gone,)).fetchone()[0] == 0
    assert store.delete_run(gone) is False
    assert store.get_run(keep) is not None and store.metrics(keep) and store.artifacts(keep)
    assert store.run_dir(keep).is_dir()
    with pytest.raises(ValueError):
        store.delete_run("../escape")


def test_snapshot_round_trip_without_pickle(store):
    rid = _make_run(store)
    feats = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    labels = np.arange(50) % 3
    path = store.save_snapshot(rid, 120, features=feats, labels=labels, flags=np.array([True, False]))
    assert path == store.run_dir(rid) / "snapshot_00000120.npz" and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    loaded = store.load_snapshot(path)
    np.testing.assert_array_equal(loaded["features"], feats)
    assert loaded["features"].dtype == np.float32
    np.testing.assert_array_equal(loaded["labels"], labels)
    assert loaded["flags"].tolist() == [True, False]

    store.save_snapshot(rid, 240, features=feats, step=np.array(7))  # an array may be called "step"
    snaps = store.artifacts(rid, kind="snapshot")
    second = path.with_name("snapshot_00000240.npz")
    assert [(a["step"], a["path"]) for a in snaps] == [(120, str(path)), (240, str(second))]

    with pytest.raises(ValueError, match="object"):
        store.save_snapshot(rid, 1, bad=np.array([{"a": 1}], dtype=object))
    pickled = store.run_dir(rid) / "pickled.npz"
    np.savez(pickled, bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        store.load_snapshot(pickled)


def test_artifact_paths_are_relative_inside_the_store(tmp_path):
    with RunStore(tmp_path / "a" / "lab.db") as store:
        rid = _make_run(store)
        store.save_snapshot(rid, 1, x=np.ones(3))
        store.add_artifact(rid, None, "figure", tmp_path / "elsewhere.png")
        raw = store._conn().execute("SELECT path FROM artifacts ORDER BY rowid").fetchall()
    assert raw == [(f"{rid}/snapshot_00000001.npz",), (str(tmp_path / "elsewhere.png"),)]
    (tmp_path / "a").rename(tmp_path / "b")  # moving the store folder keeps snapshots findable
    with RunStore(tmp_path / "b" / "lab.db") as store:
        path = store.artifacts(rid, kind="snapshot")[0]["path"]
        assert store.load_snapshot(path)["x"].tolist() == [1.0, 1.0, 1.0]


def test_close_flushes_open_writers(tmp_path):
    store = RunStore(tmp_path / "lab.db")
    rid = _make_run(store)
    writer: MetricWriter = store.metric_writer(rid, flush_every_s=3600)
    writer.add(0, "lr", 0.1)
    store.close()
    store.close()  # idempotent
    with RunStore(tmp_path / "lab.db") as again:
        assert again.final_metrics(rid) == {"lr": 0.1}
