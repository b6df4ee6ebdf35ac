"""Run listings for people: local times, names, techniques, outcome, 4 significant digits."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.listing import duration, fmt, grouped_metrics, run_details, run_rows, runs_table
from engine.store import RunStore


@pytest.fixture(scope="module")
def store_with_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("listing") / "lab.db"
    quick = ["--set", "train.steps=30", "--set", "train.eval_every=10", "--store", str(path), "--quiet"]
    assert main(["run", "--preset", "noisy-labels", *quick]) == 0
    assert main(["run", "--preset", "noisy-labels", "--variant", "regularized", *quick]) == 0
    return path


def test_table_is_for_people(store_with_runs: Path) -> None:
    with RunStore(store_with_runs) as store:
        runs = store.list_runs()
        table = runs_table(run_rows(store, runs))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "NAME"]
    assert len(lines) == 3
    newest, oldest = lines[1], lines[2]
    assert newest.startswith(runs[0]["id"]) and oldest.startswith(runs[1]["id"])
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", newest)
    assert str(int(runs[0]["created_at"])) not in table  # no raw Unix timestamp
    assert "elr" in newest and " elr" not in oldest.split("noisy-labels", 2)[-1].split("completed")[0]
    assert "completed" in newest and re.search(r"\d+\.\d s", newest)


def test_details_group_metrics_and_round(store_with_runs: Path) -> None:
    with RunStore(store_with_runs) as store:
        run = store.list_runs()[0]
        final = store.final_metrics(run["id"])
    text = run_details(run, final, "memorized")
    techniques_line = next(line for line in text.splitlines() if line.startswith("  techniques "))
    assert techniques_line.split()[1] == "elr" and "lambda 3" in techniques_line and "beta 0.7" in techniques_line
    assert "optimizer  adam (lr 0.001, weight decay 0)" in text
    assert "data       digits (n train 1200, n test 597, noise 0.4)" in text
    assert "outcome memorized" in text
    train_line = next(line for line in text.splitlines() if line.startswith("  train "))
    numbers = re.findall(r"\d+\.\d+(?:e-?\d+)?", train_line)
    assert numbers and all(len(n.replace(".", "").lstrip("0").split("e")[0]) <= 4 for n in numbers)


def test_formatting_helpers() -> None:
    assert fmt(0.123456789) == "0.1235" and fmt(float("nan")) == "nan" and fmt(12345678.0) == "1.235e+07"
    assert duration({"created_at": 0.0, "finished_at": 7.25}) == "7.2 s"
    assert duration({"created_at": 0.0, "finished_at": 185.0}) == "3 min 05 s"
    assert duration({"created_at": time.time() - 1.0, "finished_at": None}, now=time.time()).endswith(" s")
    assert grouped_metrics({"train/loss": 1.0, "test/acc": 0.5, "lr": 0.1}) == [
        ("other", [("lr", "0.1")]), ("test", [("acc", "0.5")]), ("train", [("loss", "1")])]
    assert runs_table([]).startswith("no runs in this store")


def test_cli_list_filters_and_show_prints_the_verdict(store_with_runs: Path, capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    assert main(["list", "--store", str(store_with_runs), "--preset", "noisy-labels", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "elr" in lines[1]  # newest only
    with RunStore(store_with_runs) as store:
        outcomes = {row["id"]: row["outcome"] for row in run_rows(store, store.list_runs())}
    wanted = next(iter(outcomes.values()))
    assert main(["list", "--store", str(store_with_runs), "--outcome", wanted]) == 0
    shown = capsys.readouterr().out.splitlines()[1:]
    assert {line.split()[0] for line in shown} == {rid for rid, o in outcomes.items() if o == wanted}
    assert main(["list", "--store", str(store_with_runs), "--preset", "sam"]) == 0
    assert capsys.readouterr().out.strip() == "no runs match these filters"
    run_id = next(iter(outcomes))
    assert main(["show", run_id, "--store", str(store_with_runs)]) == 0
    text = capsys.readouterr().out
    assert f"· outcome {outcomes[run_id]}: " in text and "techniques elr" in text
    assert main(["list", "--store", str(store_with_runs), "--limit", "0"]) == 2
