"""A finite loss blow-up — above 10⁴ × the initial (step-1) training loss — ends a run ``diverged``
exactly like a non-finite loss: the history up to it is kept and the reason names both losses."""

from __future__ import annotations

import math

import pytest

from engine.config import validate
from engine.events import Status, Step
from engine.outcome import BLOWUP_FACTOR, divergence
from engine.trainer import Trainer


@pytest.mark.parametrize(("loss", "initial", "diverged"), [
    (1.0, 1.0, False),
    (BLOWUP_FACTOR * 0.5, 0.5, False),          # exactly at the threshold: still training
    (BLOWUP_FACTOR * 0.5 * 1.001, 0.5, True),   # just above it
    (2.5e15, 0.0104, True),                      # grokking-quadratic at lr 100, as reported
    (math.inf, 1.0, True),
    (math.nan, 1.0, True),
    (1e9, 0.0, False),                           # no positive reference: only non-finite counts
    (math.nan, 0.0, True),
])
def test_divergence_rule(loss: float, initial: float, diverged: bool) -> None:
    assert bool(divergence(loss, initial)) is diverged


def grokking(lr: float, steps: int = 30) -> Trainer:
    return Trainer(validate({
        "seed": 0, "data": {"name": "modular", "p": 23, "train_frac": 0.5},
        "model": {"name": "quadratic_mlp", "width": 64}, "loss": {"name": "mse"},
        "optim": {"name": "sgd", "lr": lr}, "train": {"steps": steps, "eval_every": 10, "log_every": 1},
    }))


def test_finite_blow_up_ends_diverged_with_history_kept() -> None:
    events: list = []
    result = grokking(lr=100.0).run(events.append)
    assert result.status == "diverged" and result.steps < 30
    final = events[-1]
    assert isinstance(final, Status) and final.state == "diverged" and final.outcome == "diverged"
    losses = [e.metrics["train/loss"] for e in events if isinstance(e, Step)]
    assert len(losses) == result.steps and all(math.isfinite(v) for v in losses)  # finite, yet diverged
    assert losses[-1] > BLOWUP_FACTOR * losses[0] and all(v <= BLOWUP_FACTOR * losses[0] for v in losses[:-1])
    assert f"diverged at step {result.steps} (loss " in final.message and "above 10⁴ × the initial" in final.message


def test_a_stable_run_is_not_flagged() -> None:
    result = grokking(lr=0.5).run()
    assert result.status == "completed"
