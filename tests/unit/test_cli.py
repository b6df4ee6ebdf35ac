"""CLI contract (README, Command line): exit codes, one-line errors, JSON shapes, a store shared by processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=300)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--preset", "no-such-preset"],
        ["run", "--config", "/nonexistent/cfg.yaml"],
        ["run", "--preset", "grokking-quadratic", "--set", "optim.lr=-1"],
        ["run", "--preset", "grokking-quadratic", "--set", "no.such.key=1"],
        ["run", "--preset", "grokking-quadratic", "--set", "train.steps=abc"],
        ["run", "--preset", "grokking-quadratic", "--set", "optim.lr"],
        ["run", "--preset", "grokking-quadratic", "--set", "model.name=cnn"],
        ["run", "--preset", "grokking-quadratic", "--set", "regularizers.sam.rho=9"],
        ["run", "--preset", "grokking-quadratic", "--variant", "nope"],
        ["run", "--preset", "grokking-quadratic", "--config", "x.yaml"],
        ["run"],
        ["nonsense"],
        [],
        ["show", "r-does-not-exist"],
        ["run", "--preset", "grokking-quadratic", "--device", "tpu"],
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture, store_path: Path) -> None:
    if argv and argv[0] in ("run", "show"):
        argv = [*argv, "--store", str(store_path)]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_bad_store_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["list", "--store", str(blocker / "sub" / "lab.db")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(blocker) in err


def test_bad_config_file_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {lr: -3}\n")
    proc = cli("run", "--config", str(cfg), "--store", str(tmp_path / "lab.db"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "optim.lr" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_json_out_files_and_second_process_reads_store(tmp_path: Path) -> None:
    store = tmp_path / "lab.db"
    out = tmp_path / "out"
    proc = cli("run", "--preset", "noisy-labels", "--set", "train.steps=20", "--set", "train.eval_every=10",
               "--store", str(store), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert {"train/loss", "test/acc", "noisy/memorized_frac"} <= set(summary["final"])
    assert json.loads((out / "summary.json").read_text())["run_id"] == summary["run_id"]
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,name,value"
    assert json.loads((out / "config.json").read_text())["preset"] == "noisy-labels"

    listed = cli("list", "--store", str(store), "--json")
    assert listed.returncode == 0
    assert [r["id"] for r in json.loads(listed.stdout)] == [summary["run_id"]]
    shown = cli("show", summary["run_id"][:10], "--store", str(store), "--json")
    assert shown.returncode == 0
    run = json.loads(shown.stdout)
    assert run["status"] == "completed" and run["final"]["train/loss"] == pytest.approx(summary["final"]["train/loss"])


def test_diverged_run_exits_3_and_keeps_history(tmp_path: Path) -> None:
    cfg = tmp_path / "diverge.json"
    cfg.write_text(json.dumps({
        "data": {"name": "teacher_student", "n_train": 64, "n_test": 16, "dim": 8},
        "model": {"name": "mlp", "width": 32, "init_scale": 5.0},
        "optim": {"name": "sgd", "lr": 50.0}, "loss": {"name": "mse"}, "train": {"steps": 500},
    }))
    store = tmp_path / "lab.db"
    proc = cli("run", "--config", str(cfg), "--store", str(store), "--json", "--quiet")
    assert proc.returncode == 3
    summary = json.loads(proc.stdout)
    assert summary["status"] == "diverged" and summary["steps"] < 500
    rows = Path(summary["history_path"]).read_text().splitlines()
    assert sum(1 for r in rows if ",train/loss," in r) == summary["steps"]


def test_listings(capsys: pytest.CaptureFixture) -> None:
    assert main(["presets", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out)
    assert {"grokking-quadratic", "noisy-labels", "edge-of-stability"} <= {p["id"] for p in presets}
    assert main(["regularizers", "--json"]) == 0
    techniques = json.loads(capsys.readouterr().out)
    names = {t["name"] for t in techniques}
    assert {"l2", "l1", "elr", "sam", "orthograd", "stablemax", "mixup", "grad_clip", "grad_noise"} <= names
    assert all({"name", "type", "default", "min", "max", "live"} <= set(p) for t in techniques for p in t["params"])
    assert main(["presets"]) == 0 and "noisy-labels" in capsys.readouterr().out
