"""Hostile and faulty CLI input (the config, output-path and divergence cases): each case
exits with its documented code and one line on stderr, and bad input is refused before anything is
recorded or trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli as cli_mod
from engine.cli import main
from engine.store import RunStore, StoreError

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "train.steps=3", "--set", "train.eval_every=3"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    assert "Traceback" not in err
    return lines[0]


def runs_in(store: Path) -> list[dict]:
    return RunStore(store).list_runs() if store.exists() else []


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


# ---- config files ---------------------------------------------------------------------------------

GARBAGE = bytes(range(256)) * 8 + b"\xff\xfe\x00\xc3"


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("garbage.yaml", GARBAGE, "not UTF-8"),
    ("garbage.json", GARBAGE, "not UTF-8"),
    ("deep.yaml", "optim: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 32"),
    ("deep_block.yaml", "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "x: 1\n",
     "nested deeper than 32"),
    ("deep.json", '{"optim": ' + "[" * 10_000 + "]" * 10_000 + "}", "nested deeper than 32"),
    ("dup.json", '{"optim": {"lr": 0.01}, "optim": {"lr": 50}}', "duplicate key 'optim'"),
    ("dup.yaml", "optim:\n  lr: 0.01\noptim:\n  lr: 50\n", "duplicate key 'optim' at line 3"),
    ("dup_inner.yaml", "optim:\n  lr: 0.01\n  lr: 50\n", "duplicate key 'lr'"),
    ("alias.yaml", "a: &x {lr: 1}\noptim: *x\n", "alias"),
    ("big.yaml", "# padding\n" * 110_000, "larger than 1 MB"),
    ("huge_int.json", '{"seed": ' + "9" * 5_000 + "}", "more than 4,300 digits"),
])
def test_hostile_config_file_exits_2_before_anything_is_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: str | bytes, expected: str) -> None:
    cfg = write(tmp_path / name, content)
    store = tmp_path / "lab.db"
    code, err = run_main(["run", "--config", str(cfg), "--store", str(store)], capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"error: --config {cfg}: ") and expected in line, line
    assert len(line) < 300
    assert not store.exists()


def test_a_10k_deep_yaml_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    """The RecursionError case end to end: no 3,000-line traceback, one line, exit 2."""
    cfg = write(tmp_path / "deep.yaml", "optim:\n  lr: " + "[" * 10_000 + "]" * 10_000 + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(cfg), "--store",
                           str(tmp_path / "lab.db")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "nested deeper than 32" in one_line(proc.stderr)


def test_valid_config_within_the_limits_still_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The caps refuse hostile text only: an ordinary YAML config (with a comment-padded size near,
    but under, the limit) trains as before."""
    text = "# " + "x" * 900_000 + "\npreset: grokking-quadratic\ndata: {name: modular, p: 7}\n" \
           "model: {name: mlp, width: 8}\ntrain: {steps: 3, eval_every: 3}\n"
    cfg = write(tmp_path / "ok.yaml", text)
    code, err = run_main(["run", "--config", str(cfg), "--store", str(tmp_path / "lab.db"), "--quiet"], capsys)
    assert code == 0, err
    assert [r["status"] for r in runs_in(tmp_path / "lab.db")] == ["completed"]


# ---- --set ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("assignment", "expected"), [
    ("optim.lr=" + "[" * 50_000, "--set optim.lr: nested deeper than 32"),
    ("optim.lr=" + "[" * 50_000 + "]" * 50_000, "--set optim.lr: nested deeper than 32"),
    ('regularizers={"l2": {"lambda": 0.1}, "l2": {"lambda": 9}}', "duplicate key 'l2'"),
    ("a" + ".a" * 50_000 + "=1", "more than 32 parts in the key"),
    ("optim.lr=" + "9" * 6_000, "optim.lr: "),
])
def test_hostile_set_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, assignment: str,
                                   expected: str) -> None:
    store = tmp_path / "lab.db"
    code, err = run_main(["run", "--preset", "grokking-quadratic", "--set", assignment, "--store", str(store)],
                         capsys)
    assert code == 2
    line = one_line(err)
    assert expected in line and len(line) < 400, line[:400]
    assert not store.exists()


def test_hostile_grid_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "lab.db"
    code, err = run_main(["sweep", "--preset", "grokking-quadratic", "--grid", "optim.lr=" + "[" * 50_000,
                          "--store", str(store)], capsys)
    assert code == 2 and one_line(err) == "error: --grid optim.lr: nested deeper than 32 levels; " \
        "a config is a few sections of plain values"
    assert not store.exists()


# ---- dataset-level checks (preflight) --------------------------------------------------------------

@pytest.mark.parametrize(("assignment", "expected"), [
    ("train.batch_size=5000", "train.batch_size: 5000 is larger than the 1200 training examples; "
                              "use ≤ 1200 or 0 for full batch"),
    ("data.n_train=5000", "data.n_train: digits has 1,797 images (got 5000)"),
])
def test_config_its_dataset_cannot_run_exits_2_before_a_run_is_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture, assignment: str, expected: str) -> None:
    store = tmp_path / "lab.db"
    code, err = run_main(["run", "--preset", "noisy-labels", "--set", assignment, "--store", str(store)], capsys)
    assert code == 2
    assert expected in one_line(err)
    assert not store.exists()


def test_batch_size_equal_to_the_training_set_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "lab.db"
    code, err = run_main(["run", "--preset", "noisy-labels", "--set", "train.batch_size=1200", *FAST,
                          "--store", str(store), "--quiet"], capsys)
    assert code == 0, err


# ---- output paths ----------------------------------------------------------------------------------

def test_run_out_naming_a_file_exits_2_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = write(tmp_path / "taken", "a file")
    store = tmp_path / "lab.db"
    for out in (blocker, blocker / "sub"):
        code, err = run_main(["run", "--preset", "grokking-quadratic", *FAST, "--out", str(out),
                              "--store", str(store)], capsys)
        assert code == 2
        line = one_line(err)
        assert line.startswith(f"error: --out {out}: ") and str(blocker) in line and "file" in line
    assert not store.exists()  # refused before the store was opened, let alone a run recorded
    assert blocker.read_text() == "a file"


def test_run_out_with_a_folder_where_an_output_file_goes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "out" / "summary.json").mkdir(parents=True)
    code, err = run_main(["run", "--preset", "grokking-quadratic", *FAST, "--out", str(tmp_path / "out"),
                          "--store", str(tmp_path / "lab.db")], capsys)
    assert code == 2 and "summary.json is a folder" in one_line(err)
    assert not (tmp_path / "lab.db").exists()


def test_run_out_in_an_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes into a mode-555 folder: make the write probe fail as it would
        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(cli_mod.tempfile, "TemporaryFile", refuse)
    code, err = run_main(["run", "--preset", "grokking-quadratic", *FAST, "--out", str(locked / "out"),
                          "--store", str(tmp_path / "lab.db")], capsys)
    assert code == 2 and f"cannot write in {locked} (Permission denied)" in one_line(err)
    assert not (tmp_path / "lab.db").exists()


# ---- divergence, then export of the diverged run -----------------------------------------------------

@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """grokking-quadratic at lr 100: the loss stays finite (~1e17) but has blown up past 10⁴×."""
    home = tmp_path_factory.mktemp("diverged")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--preset", "grokking-quadratic", "--set", "optim.lr=100",
         "--set", "train.steps=20", "--set", "train.log_every=1", "--store", str(home / "lab.db"), "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stderr
    return home, json.loads(proc.stdout)


def test_finite_loss_blow_up_exits_3_diverged_with_history(diverged: tuple[Path, dict]) -> None:
    home, summary = diverged
    assert summary["status"] == "diverged" and summary["steps"] < 20
    assert "above 10⁴ × the initial" in summary["message"]
    steps, losses = RunStore(home / "lab.db").metrics(summary["run_id"])["train/loss"]
    assert list(steps) == list(range(1, summary["steps"] + 1))  # the history up to the blow-up is kept
    assert losses[-1] > 1e4 * losses[0] and all(abs(v) < float("inf") for v in losses)


def test_export_out_naming_a_file_exits_2(diverged: tuple[Path, dict], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    home, summary = diverged
    blocker = write(tmp_path / "exports", "a file")
    code, err = run_main(["export", summary["run_id"], "--format", "csv", "--out", str(blocker),
                          "--store", str(home / "lab.db")], capsys)
    assert code == 2
    assert one_line(err).startswith(f"error: --out {blocker}: is an existing file")
    assert blocker.read_text() == "a file"


# ---- exit codes of store errors, usage line --------------------------------------------------------

@pytest.mark.parametrize("exit_code", [1, 2])
def test_store_errors_exit_with_their_own_code(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                               exit_code: int) -> None:
    def failing(path: str | None, **kwargs: object) -> None:
        raise StoreError("store /x/lab.db: disk full; free some space and rerun", exit_code)

    monkeypatch.setattr(cli_mod, "_open_store", failing)
    code, err = run_main(["list"], capsys)
    assert code == exit_code and "disk full" in one_line(err)


def test_usage_error_points_to_the_top_level_help(capsys: pytest.CaptureFixture) -> None:
    code, err = run_main([], capsys)
    assert code == 2 and one_line(err).endswith("(see: python -m engine --help)")
    code, err = run_main(["run"], capsys)
    assert code == 2 and one_line(err).endswith("(see: python -m engine run --help)")
