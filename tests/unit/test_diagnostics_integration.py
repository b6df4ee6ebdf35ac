"""Diagnostics inside the trainer: scheduled, on demand, stored, and never changing the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.config import validate
from engine.diagnostics import all_diagnostics
from engine.events import Artifact, Eval, Status, Step
from engine.runner import execute
from engine.store import RunStore
from engine.trainer import Trainer

OFF = {name: {"enabled": False} for name, cls in all_diagnostics().items() if cls.default_on}


def noisy_config(diagnostics: dict) -> dict:
    return {
        "seed": 5,
        "data": {"name": "digits", "n_train": 200, "n_test": 60, "noise": 0.2},
        "model": {"name": "mlp", "width": 24, "depth": 2, "dropout": 0.1},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"steps": 24, "batch_size": 50, "eval_every": 8},
        "regularizers": {"grad_noise": {"eta": 0.01}},
        "diagnostics": diagnostics,
    }


def step_trace(events: list) -> list[tuple]:
    return [(e.step, tuple(sorted(e.metrics.items()))) for e in events if isinstance(e, Step)]


def test_every_instrument_leaves_the_training_steps_bit_identical() -> None:
    every = {name: {"every": 4} for name, cls in all_diagnostics().items() if cls.applies(validate(noisy_config({})))}
    every["sharpness"] = {"every": 4, "max_iter": 10}
    every["trace"] = {"every": 4, "m": 6}
    every["top_k"] = {"every": 12, "k": 2}
    every["density"] = {"every": 12, "m": 8}
    every["landscape"] = {"every": 12, "points": 3}
    every["coherence"] = {"every": 4, "m": 8}
    with_instruments = list(Trainer(validate(noisy_config(every))).events())
    without = list(Trainer(validate(noisy_config(OFF))).events())
    measured = {k for e in with_instruments if isinstance(e, Eval) for k in e.metrics}
    assert {"sharpness/top_eig", "sharpness/trace", "nc/nc1", "rank/effective", "calib/ece",
            "units/dead_frac", "grad/coherence"} <= measured
    assert {a.kind for a in with_instruments if isinstance(a, Artifact)} >= {"density", "landscape"}
    assert step_trace(with_instruments) == step_trace(without)
    assert not any(k.startswith(("nc/", "rank/")) for e in without if isinstance(e, Eval) for k in e.metrics)


def test_on_demand_measurement_is_stored_as_an_artifact(tmp_path: Path) -> None:
    cfg = validate(noisy_config({}) | {"train": {"steps": 6, "batch_size": 50, "eval_every": 3}})
    trainer = Trainer(cfg)
    trainer.commands.measure("density")
    trainer.commands.measure("no_such_instrument")
    store = RunStore(tmp_path / "lab.db")
    seen: list = []
    run_id, result = execute(cfg, store, seen.append, trainer=trainer)
    assert result.status == "completed"
    assert any("refused" in e.message for e in seen if isinstance(e, Status))
    density = store.artifacts(run_id, kind="density")
    assert len(density) == 1
    arrays = np.load(density[0]["path"], allow_pickle=False)
    grid, values = arrays["grid"], arrays["density"]
    assert np.isclose(np.trapezoid(values, grid), 1.0, atol=1e-2)
    assert "sharpness/lambda_max_ritz" in store.final_metrics(run_id)


def test_outcome_is_reported_for_classification(tmp_path: Path) -> None:
    cfg = validate({"seed": 0, "data": {"name": "moons", "n_train": 200, "n_test": 200},
                    "model": {"name": "mlp", "width": 32}, "optim": {"name": "adam", "lr": 0.02},
                    "train": {"steps": 150, "eval_every": 10}})
    run_id, result = execute(cfg, RunStore(tmp_path / "lab.db"))
    assert result.outcome in {"generalized", "memorized", "no_learning", "grokked"}
    assert result.outcome == "generalized"  # moons: train and test accuracy rise together
    message = RunStore(tmp_path / "lab.db").get_run(run_id)["message"]  # the verdict's one-line reason
    assert message.startswith("test acc ") and message.endswith(" ≥ 0.95") and "\n" not in message
