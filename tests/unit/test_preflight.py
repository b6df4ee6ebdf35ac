"""preflight.check_runnable: the dataset-level refusals a schema cannot make, before anything is recorded —
shared by the CLI, the Lab's Start button (engine.jobs.Job) and sweeps."""

from __future__ import annotations

import pytest

from engine import preflight
from engine.cli import load_run_config
from engine.config import ConfigError
from engine.jobs import Job
from engine.presets import preset_ids


@pytest.mark.parametrize("preset", preset_ids())
def test_every_preset_passes(preset: str) -> None:
    preflight.check_runnable(load_run_config(preset, None, []))


@pytest.mark.parametrize(("preset", "assignments", "expected"), [
    ("noisy-labels", ["train.batch_size=5000"],
     "train.batch_size: 5000 is larger than the 1200 training examples; use ≤ 1200 or 0 for full batch"),
    ("noisy-labels", ["train.batch_size=1201"], "train.batch_size: 1201 is larger than the 1200 training examples"),
    ("noisy-labels", ["data.n_train=5000"], "data.n_train: digits has 1,797 images (got 5000)"),
    ("grokking-quadratic", ["train.batch_size=10000"], "train.batch_size: 10000 is larger than the "),
])
def test_refusals_name_the_field_and_the_numbers(preset: str, assignments: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        preflight.check_runnable(load_run_config(preset, None, assignments))
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_the_training_set_size_is_the_datasets_own() -> None:
    """The modular dataset's size comes from train_frac (not data.n_train): the check builds the data."""
    cfg = load_run_config("grokking-quadratic", None, [])
    n = preflight.train_size(cfg)
    assert 0 < n < cfg.data.p ** 2
    preflight.check_runnable(load_run_config("grokking-quadratic", None, [f"train.batch_size={n}"]))
    with pytest.raises(ConfigError, match=f"{n + 1} is larger than the {n} training examples"):
        preflight.check_runnable(load_run_config("grokking-quadratic", None, [f"train.batch_size={n + 1}"]))


def test_the_lab_start_path_refuses_before_building_anything() -> None:
    cfg = load_run_config("noisy-labels", None, ["train.batch_size=5000"])
    with pytest.raises(ConfigError, match=r"train\.batch_size: 5000"):
        Job(cfg, store=None)
