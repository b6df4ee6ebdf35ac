"""Sweeps under faults: cells refused up front by the dataset-level checks, workers that must die
with a killed driver, and a resume that never runs a cell twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import ConfigError
from engine.store import RunStore, _process_start_ticks
from engine.sweeps import Sweep, build_spec
from engine.sweeps.lifeline import driver_alive

REPO = Path(__file__).resolve().parents[2]
DIGITS = {"data": {"name": "digits", "n_train": 300, "n_test": 300}, "model": {"width": 32},
          "optim": {"name": "sgd", "lr": 0.1}, "train": {"steps": 5, "eval_every": 5}}
# Long enough (a few seconds a cell on a busy 2-core machine) to be killed mid-run.
MOONS = {"data": {"name": "moons", "n_train": 200, "n_test": 200}, "model": {"width": 16},
         "optim": {"name": "sgd", "lr": 1.0}, "train": {"steps": 1500, "eval_every": 500}}


# ---- dataset-level checks, before anything is recorded ------------------------------------------------


def test_a_cell_its_dataset_cannot_run_is_refused_up_front(tmp_path, capsys):
    spec = build_spec(config=DIGITS, grid=["data.n_train=100,5000"], seeds=1)
    with pytest.raises(ConfigError) as info:
        spec.cells()
    message = str(info.value)
    assert "\n" not in message and "data.n_train=5000" in message and "data.n_train:" in message

    config = tmp_path / "digits.json"
    config.write_text(json.dumps(DIGITS))
    db = tmp_path / "lab.db"
    rc = main(["sweep", "--config", str(config), "--grid", "data.n_train=100,5000", "--store", str(db),
               "--backend", "inline", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "data.n_train=5000" in err
    assert not db.exists()  # refused before the store was touched


def test_batch_larger_than_the_data_is_refused_naming_the_cell(tmp_path):
    spec = build_spec(config=DIGITS, grid=["train.batch_size=32,1000"], seeds=1)
    with pytest.raises(ConfigError, match=r"train.batch_size=1000 \(seed 0\): train.batch_size"):
        Sweep(RunStore(tmp_path), spec, backend="inline")
    assert RunStore(tmp_path).list_sweeps() == []


# ---- resume with live owners ---------------------------------------------------------------------------


def test_resume_refuses_while_a_cell_has_a_live_owner(tmp_path):
    spec = build_spec(config=DIGITS, grid=["model.width=8,16"], seeds=1)
    store = RunStore(tmp_path)
    sweep_id = store.create_sweep(spec.to_dict(), name="s", backend="local")
    store.set_sweep_status(sweep_id, "interrupted", "driver killed")
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_id = store.create_run(spec.cells()[1].config, tags=["cell:1"], sweep_id=sweep_id)
        store._conn().execute("UPDATE runs SET pid = ?, pid_start = ? WHERE id = ?",
                              (owner.pid, _process_start_ticks(owner.pid), run_id))
        with pytest.raises(ConfigError) as info:
            Sweep(store, sweep_id=sweep_id, backend="inline")
        message = str(info.value)
        assert "\n" not in message and "cell 1 " in message and str(owner.pid) in message
    finally:
        owner.kill()
        owner.wait(timeout=30)
    # the owner is gone: its run becomes interrupted and the resume may go ahead
    sweep = Sweep(store, sweep_id=sweep_id, backend="inline")
    assert store.get_run(run_id)["status"] == "interrupted"
    assert [c.status for c in sweep.view().cells] == ["pending", "interrupted"]


def test_driver_alive_tells_a_live_driver_from_a_dead_or_reused_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _process_start_ticks(child.pid)
        assert start is not None and driver_alive(child.pid, start)
        assert not driver_alive(child.pid, start + 1)  # the same pid, but a process started later
    finally:
        child.kill()
        child.wait(timeout=30)
    assert not driver_alive(child.pid, start)


# ---- kill -9 of the driver -----------------------------------------------------------------------------


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _runs(db: Path, sweep_id: str | None = None) -> list[dict]:
    with RunStore(db) as store:
        return store.list_runs(sweep_id=sweep_id) if sweep_id else store.list_runs()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process groups from /proc")
def test_kill_9_of_the_driver_takes_its_workers_and_a_resume_runs_each_cell_once(tmp_path):
    config = tmp_path / "moons.json"
    config.write_text(json.dumps(MOONS))
    db = tmp_path / "lab.db"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "engine", "sweep", "--config", str(config), "--grid", "model.width=16,24",
           "--workers", "2", "--store", str(db), "--quiet"]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pgid = driver.pid
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if db.exists() and any(r["status"] == "running" for r in _runs(db)):
                break
            time.sleep(0.2)
        assert driver.poll() is None, f"the sweep ended before it could be killed: {driver.stderr.read()}"
        running = [r for r in _runs(db) if r["status"] == "running"]
        assert running, "no cell started within two minutes"
        workers = {r["pid"] for r in running}
        assert len(_group(pgid)) >= 3  # driver, fork server / resource tracker, worker(s)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = _group(pgid)
        assert survivors == [], f"still alive 10 s after the driver was killed: {survivors} (workers {workers})"
    finally:
        for pid in _group(pgid):  # never leave a stray process behind, whatever failed
            os.kill(pid, signal.SIGKILL)
        driver.stderr.close()

    (sweep,) = RunStore(db).list_sweeps()
    before = Counter(tag for r in _runs(db, sweep["id"]) for tag in r["tags"])
    assert sweep["status"] == "interrupted"
    rc = main(["sweep", "--resume", sweep["id"], "--store", str(db), "--backend", "inline", "--quiet"])
    assert rc == 0
    runs = _runs(db, sweep["id"])
    finished = Counter(tag for r in runs if r["status"] in ("completed", "diverged") for tag in r["tags"])
    assert finished == {"cell:0": 1, "cell:1": 1}  # every cell ran to the end exactly once
    after = Counter(tag for r in runs for tag in r["tags"])
    for cell in ("cell:0", "cell:1"):  # a resume adds at most one run per cell: the one that finishes it
        assert after[cell] - before[cell] <= 1
    assert {r["status"] for r in runs} <= {"completed", "diverged", "interrupted"}
