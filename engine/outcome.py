"""Run outcome from the evaluation history: diverged, no_learning, memorized, generalized, grokked.

The badge of diagnostics.md §12 (`grok/outcome`), also used to colour sweep grids. The rule is a
lab proposal whose thresholds are to be calibrated; it is applied exactly as written there:

    t_train = first eval step with train/acc ≥ 0.99
    t_test  = first eval step with test/acc  ≥ 0.95

    diverged     the run stopped on a non-finite loss (status "diverged", or a non-finite
                 train/loss or train/loss_full in the history)
    no_learning  t_train undefined
    memorized    t_train defined, t_test undefined
    grokked      t_test > 3·t_train  and  t_test − t_train ≥ 50 steps
    generalized  otherwise (t_test ≤ 3·t_train, or a delay shorter than 50 steps)

Calibrated cases (phenomena.md §2–§3): the quadratic MLP without weight decay (t_train ≤ 50,
t_test ≈ 250) → grokked; ⊥Grad (both ≈ 150) → generalized; the baselines → memorized. A
memorizing baseline's test accuracy can sit *below* chance (0.000 at p = 113), which changes
nothing here: only the thresholds above matter, never "equals chance".

``OutcomeTracker`` applies the rule incrementally (the trainer feeds it each Eval's metrics and
keeps no history); the pure functions replay a stored history through it, so there is one
implementation of the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

Outcome = Literal["diverged", "no_learning", "memorized", "generalized", "grokked"]
History = Mapping[str, Sequence[tuple[int, float]]]

TRAIN_ACC, TEST_ACC = "train/acc", "test/acc"
LOSS_KEYS = ("train/loss", "train/loss_full")
TRAIN_THRESHOLD = 0.99
TEST_THRESHOLD = 0.95
GROK_RATIO = 3.0
GROK_MIN_DELAY = 50


class OutcomeTracker:
    """Incremental outcome: remembers t_train, t_test, the latest accuracies and non-finite losses."""

    def __init__(self) -> None:
        self.t_train: int | None = None
        self.t_test: int | None = None
        self.train_acc: float | None = None
        self.test_acc: float | None = None
        self.nonfinite = False

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        """Feed one evaluation (steps in increasing order; metrics it lacks are simply skipped)."""
        if any(key in metrics and not math.isfinite(metrics[key]) for key in LOSS_KEYS):
            self.nonfinite = True
        if TRAIN_ACC in metrics:
            self.train_acc = metrics[TRAIN_ACC]
            if self.t_train is None and self.train_acc >= TRAIN_THRESHOLD:
                self.t_train = step
        if TEST_ACC in metrics:
            self.test_acc = metrics[TEST_ACC]
            if self.t_test is None and self.test_acc >= TEST_THRESHOLD:
                self.t_test = step

    def grokked(self) -> bool:
        """t_test > 3·t_train and t_test − t_train ≥ 50 (both defined)."""
        if self.t_train is None or self.t_test is None:
            return False
        return self.t_test > GROK_RATIO * self.t_train and self.t_test - self.t_train >= GROK_MIN_DELAY

    def outcome(self, status: str) -> Outcome:
        """The §12 class, given the run's final status ("completed", "diverged", "stopped", …)."""
        if status == "diverged" or self.nonfinite:
            return "diverged"
        if self.t_train is None:
            return "no_learning"
        if self.t_test is None:
            return "memorized"
        return "grokked" if self.grokked() else "generalized"

    def gap(self) -> float | None:
        """Latest train accuracy − latest test accuracy (None until both were seen)."""
        if self.train_acc is None or self.test_acc is None:
            return None
        return self.train_acc - self.test_acc


def _replay(history: History) -> OutcomeTracker:
    """Feed a stored history (metric → [(step, value)]) to a tracker, step by step in order."""
    by_step: dict[int, dict[str, float]] = {}
    for key, series in history.items():
        for step, value in series:
            by_step.setdefault(int(step), {})[key] = float(value)
    tracker = OutcomeTracker()
    for step in sorted(by_step):
        tracker.update(step, by_step[step])
    return tracker


def classify_outcome(history: History, status: str) -> Outcome:
    """The §12 outcome of a run from its eval history (metric → [(step, value)]) and final status."""
    return _replay(history).outcome(status)


def grokking_onset(history: History) -> int | None:
    """t_test — the step at which the delayed generalisation arrived — when the run grokked, else None."""
    tracker = _replay(history)
    return tracker.t_test if tracker.grokked() else None


def train_test_gap(history: History) -> float | None:
    """Train − test accuracy at the last step where both were evaluated (None if never)."""
    train = dict(history.get(TRAIN_ACC, ()))
    test = dict(history.get(TEST_ACC, ()))
    common = set(train) & set(test)
    if not common:
        return None
    last = max(common)
    return float(train[last]) - float(test[last])
