"""Run outcome verdicts: what a run did, in one word and one line with the numbers.

Vocabulary (the ``outcome`` of ``run --json``, the Lab's badge, the Sweeps page's phase colours):

    generalized  the final test score reached the threshold
    grokked      ... but only long after the training labels were fitted (delayed generalisation)
    memorized    fitted the training labels — or, with label noise, most of the *wrong* ones —
                 without reaching the test threshold
    partial      learned (clearly above chance) but neither fitted nor generalized
    no_learning  stayed near chance the whole run
    diverged     the loss became non-finite, or blew up above ``BLOWUP_FACTOR`` (10⁴) × its initial
                 value (the first recorded value of the same loss: step 1's mini-batch loss for
                 ``train/loss``, the step-0 evaluation for ``train/loss_full``)
    stopped      ended by the user before its budget: no verdict on the phenomenon

Rules, in this order (written once here; the trainer, the store replays and the sweep colours all
call them):

1. ``diverged`` when the run's status says so or its history holds a non-finite or blown-up loss;
   ``stopped`` when the user stopped it.
2. The *score* is test accuracy for classification and the coefficient of determination R² for
   regression and reconstruction (``1 − FVU``: R² = 1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖², ȳ the per-output
   mean of the split's targets). The test threshold is ``outcome.test_threshold`` of the config
   (a preset may set it; default 0.95).
3. *Fit* is judged on the labels the model should fit: with label noise on the clean training
   labels (``train/acc_clean``), with few labels on the labelled subset (``train/acc_labeled``),
   otherwise on the training labels (``train/acc``); fitted = at least ``FIT_THRESHOLD`` (0.99; for
   regression train R² ≥ 0.99). With label noise, memorisation is read from
   ``noisy/memorized_frac`` (≥ 0.5 = most wrong labels fitted).
4. ``generalized`` when the final test score ≥ threshold; ``grokked`` instead when the test score
   first crossed the threshold at t_test > 3 · t_fit and t_test − t_fit ≥ 50 steps (Power et al.
   2022's delayed generalisation; the ratio and delay were calibrated on the grokking presets:
   the quadratic MLP fits by step ≈ 20 and generalises at ≈ 260). Few-label runs never "grok":
   their fit is of a handful of labelled points.
5. ``memorized`` when fitted (or most wrong labels memorised) and the test score stays below the
   threshold; ``no_learning`` when the best fit and test scores never left chance
   (accuracy ≤ chance + 0.1·(1 − chance), chance = 1/classes; R² ≤ 0.1); ``partial`` otherwise.

``OutcomeTracker`` applies the rule incrementally (the trainer feeds it every evaluation and keeps
no history); :func:`judge` replays a stored history through the same tracker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["generalized", "grokked", "memorized", "partial", "no_learning", "diverged", "stopped"]
History = Mapping[str, Sequence[tuple[int, float]]]

TRAIN_ACC, TEST_ACC = "train/acc", "test/acc"
TRAIN_R2, TEST_R2 = "train/r2", "test/r2"
ACC_CLEAN, ACC_LABELED, MEMORIZED = "train/acc_clean", "train/acc_labeled", "noisy/memorized_frac"
DEAD_LATENTS = "sae/dead_frac"
LOSS_KEYS = ("train/loss", "train/loss_full")
SCORE_KEYS = (TRAIN_ACC, TEST_ACC, TRAIN_R2, TEST_R2, ACC_CLEAN, ACC_LABELED, MEMORIZED, DEAD_LATENTS)
HISTORY_KEYS = (*SCORE_KEYS, *LOSS_KEYS)  # what a replay needs from a stored run

FIT_THRESHOLD = 0.99
TEST_THRESHOLD = 0.95
MEMORIZED_NOISY = 0.5
NEAR_CHANCE = 0.1
NO_LEARNING_R2 = 0.1
GROK_RATIO = 3.0
GROK_MIN_DELAY = 50
BLOWUP_FACTOR = 1e4


def divergence(loss: float, initial: float | None) -> str:
    """Why ``loss`` means the run diverged, or "" while it has not.

    Non-finite, or above ``BLOWUP_FACTOR`` × the initial loss; a non-positive or non-finite
    initial loss disables the blow-up test (there is no scale to compare with).
    """
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if initial is not None and initial > 0 and math.isfinite(initial) and loss > BLOWUP_FACTOR * initial:
        return f"loss {loss:.3g} is above 10⁴ × the initial {initial:.3g}"
    return ""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class Judging:
    """What the rule needs to know about a run besides its history."""

    task: str = "classification"
    num_classes: int | None = None
    test_threshold: float = TEST_THRESHOLD
    label_noise: float = 0.0
    few_labels: bool = False
    total_steps: int | None = None

    @classmethod
    def of(cls, cfg: Any) -> Judging:
        """From a validated ``RunConfig`` (the task and class count come from the dataset's declaration)."""
        from engine.traits import run_traits

        traits = run_traits(cfg)
        outcome = getattr(cfg, "outcome", None)
        return cls(task=traits.task, num_classes=traits.num_classes,
                   test_threshold=getattr(outcome, "test_threshold", TEST_THRESHOLD),
                   label_noise=float(getattr(cfg.data, "noise", 0.0) or 0.0),
                   few_labels=bool(getattr(cfg.data, "n_labeled", 0)), total_steps=cfg.train.steps)

    @property
    def regression(self) -> bool:
        return self.task != "classification"

    @property
    def fit_key(self) -> str:
        if self.regression:
            return TRAIN_R2
        return ACC_CLEAN if self.label_noise > 0 else (ACC_LABELED if self.few_labels else TRAIN_ACC)


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _num(value: float, threshold: float) -> str:
    """Two decimals, or three when two would round a value below ``threshold`` up to it (0.986 vs 0.99)."""
    text = f"{value:.2f}"
    return f"{value:.3f}" if value < threshold <= float(text) else text


class OutcomeTracker:
    """Incremental verdict: first fit and first test crossing, latest and best scores, divergence."""

    def __init__(self, judging: Judging | None = None) -> None:
        self.judging = judging or Judging()
        self.t_fit: int | None = None
        self.t_test: int | None = None
        self.latest: dict[str, float] = {}
        self.best_fit = -math.inf
        self.best_test = -math.inf
        self.initial_loss: dict[str, float] = {}  # per loss key: its first finite value
        self.diverged_because = ""
        self.last_step = 0

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        """Feed one evaluation or logged step (steps in increasing order; missing metrics are skipped)."""
        self.last_step = max(self.last_step, int(step))
        for key in LOSS_KEYS:
            if key in metrics and not self.diverged_because:
                loss = float(metrics[key])
                if key not in self.initial_loss and math.isfinite(loss):
                    self.initial_loss[key] = loss
                if reason := divergence(loss, self.initial_loss.get(key)):
                    self.diverged_because = f"{reason} at step {step}"
        for key in SCORE_KEYS:
            if key in metrics and math.isfinite(metrics[key]):
                self.latest[key] = float(metrics[key])
        j = self.judging
        test_key = TEST_R2 if j.regression else TEST_ACC
        if j.fit_key in metrics and math.isfinite(metrics[j.fit_key]):
            self.best_fit = max(self.best_fit, metrics[j.fit_key])
            if self.t_fit is None and metrics[j.fit_key] >= FIT_THRESHOLD:
                self.t_fit = step
        if test_key in metrics and math.isfinite(metrics[test_key]):
            self.best_test = max(self.best_test, metrics[test_key])
            if self.t_test is None and metrics[test_key] >= j.test_threshold:
                self.t_test = step

    def grokked(self) -> bool:
        """The test threshold was crossed at t_test > 3·t_fit and t_test − t_fit ≥ 50 steps.

        Never for a few-label run: fitting a handful of labelled points is immediate, and the slow
        rise of test accuracy that follows (labels propagating through the unlabelled data) is
        semi-supervised learning, not the delayed generalisation of a fitted training set.
        """
        if self.t_fit is None or self.t_test is None or self.judging.few_labels:
            return False
        return self.t_test > GROK_RATIO * self.t_fit and self.t_test - self.t_fit >= GROK_MIN_DELAY

    def verdict(self, status: str) -> Verdict | None:
        """The verdict for a run that ended with ``status``; None for a failed or still running one."""
        if status == "diverged" or self.diverged_because:
            return Verdict("diverged", self.diverged_because or "the loss became non-finite")
        if status == "stopped":
            total = f" of {self.judging.total_steps}" if self.judging.total_steps else ""
            return Verdict("stopped", f"stopped by the user at step {self.last_step}{total}{self._so_far()}")
        if status != "completed":
            return None
        return self._regression() if self.judging.regression else self._classification()

    def outcome(self, status: str) -> str:
        """Just the word ("" for a failed or running run)."""
        verdict = self.verdict(status)
        return verdict.outcome if verdict else ""

    def _so_far(self) -> str:
        key, name = (TEST_R2, "test R²") if self.judging.regression else (TEST_ACC, "test acc")
        return f"; {name} {self.latest[key]:.2f} so far" if key in self.latest else ""

    def _classification(self) -> Verdict:
        j, latest = self.judging, self.latest
        test = latest.get(TEST_ACC, math.nan)
        fit = latest.get(j.fit_key, math.nan)
        fit_name = {ACC_CLEAN: "clean train acc", ACC_LABELED: "labelled train acc"}.get(j.fit_key, "train acc")
        memorized_frac = latest.get(MEMORIZED)
        noise = ""
        if j.label_noise > 0 and memorized_frac is not None:
            noise = f"; {'only ' if memorized_frac < MEMORIZED_NOISY else ''}{_pct(memorized_frac)} of the " \
                    f"{_pct(j.label_noise)} wrong labels were fitted"
        if test >= j.test_threshold:
            if self.grokked():
                assert self.t_fit is not None and self.t_test is not None
                return Verdict("grokked", f"{fit_name} reached {FIT_THRESHOLD} at step {self.t_fit}, test acc "
                                          f"{j.test_threshold} only at step {self.t_test} "
                                          f"({self.t_test / max(self.t_fit, 1):.1f}× later); final test acc {test:.2f}")
            return Verdict("generalized", f"test acc {test:.2f} ≥ {j.test_threshold}{noise}")
        fitted = self.t_fit is not None or latest.get(TRAIN_ACC, 0.0) >= FIT_THRESHOLD
        if (memorized_frac is not None and memorized_frac >= MEMORIZED_NOISY) or fitted:
            what = f"{fit_name} {fit:.2f}" if memorized_frac is None else f"train acc {latest.get(TRAIN_ACC, fit):.2f}"
            shown = _num(test, j.test_threshold)
            return Verdict("memorized", f"{what} but test acc {shown} < {j.test_threshold}{noise}")
        chance = 1.0 / j.num_classes if j.num_classes else None
        if chance is not None and max(self.best_fit, self.best_test) <= chance + NEAR_CHANCE * (1 - chance):
            return Verdict("no_learning", f"best {fit_name} {self.best_fit:.2f} and test acc {self.best_test:.2f} "
                                          f"stayed near chance ({chance:.2f})")
        tested = f"test acc {_num(test, j.test_threshold)} < {j.test_threshold}" if math.isfinite(test) \
            else "no test accuracy"
        return Verdict("partial", f"{fit_name} {_num(fit, FIT_THRESHOLD)} < {FIT_THRESHOLD} and {tested}{noise}")

    def _regression(self) -> Verdict:
        j, latest = self.judging, self.latest
        test = latest.get(TEST_R2, latest.get(TRAIN_R2, math.nan))
        train = latest.get(TRAIN_R2, math.nan)
        dead = f"; dead latents {_pct(latest[DEAD_LATENTS])}" if DEAD_LATENTS in latest else ""
        scores = f"test R² {test:.3f} (FVU {1 - test:.3f}), train R² {train:.3f}"
        if test >= j.test_threshold:
            return Verdict("generalized", f"{scores} ≥ {j.test_threshold}{dead}")
        if train >= FIT_THRESHOLD:
            return Verdict("memorized", f"{scores}: fitted but test < {j.test_threshold}{dead}")
        if max(self.best_fit, self.best_test) <= NO_LEARNING_R2:
            return Verdict("no_learning", f"{scores}: never above R² {NO_LEARNING_R2}{dead}")
        return Verdict("partial", f"{scores}: below {j.test_threshold}{dead}")


def _replay(history: History, judging: Judging | None) -> OutcomeTracker:
    """Feed a stored history (metric → [(step, value)]) to a tracker, step by step in order."""
    by_step: dict[int, dict[str, float]] = {}
    for key, series in history.items():
        for step, value in series:
            by_step.setdefault(int(step), {})[key] = float(value)
    tracker = OutcomeTracker(judging)
    for step in sorted(by_step):
        tracker.update(step, by_step[step])
    return tracker


def judge(history: History, status: str, judging: Judging | None = None) -> Verdict | None:
    """The verdict of a run from its history (metric → [(step, value)]) and final status."""
    return _replay(history, judging).verdict(status)


def classify_outcome(history: History, status: str, judging: Judging | None = None) -> str:
    """Just the word of :func:`judge` ("" for a failed or running run)."""
    verdict = judge(history, status, judging)
    return verdict.outcome if verdict else ""


def grokking_onset(history: History, judging: Judging | None = None) -> int | None:
    """t_test — the step at which the delayed generalisation arrived — when the run grokked, else None."""
    tracker = _replay(history, judging)
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


def judging_of_config(config: Mapping[str, Any]) -> Judging:
    """Judging for a stored config dict (validated, so the dataset's declarations give task and classes)."""
    from engine.config import ConfigError, validate

    try:
        return Judging.of(validate(dict(config)))
    except (ConfigError, ValueError):  # a config from an older version that no longer validates
        data = config.get("data") or {}
        return Judging(label_noise=float(data.get("noise") or 0.0), few_labels=bool(data.get("n_labeled")),
                       test_threshold=float((config.get("outcome") or {}).get("test_threshold", TEST_THRESHOLD)))


def stored_verdict(store: Any, run: Mapping[str, Any]) -> Verdict | None:
    """The verdict of a run in the store (``run`` as ``RunStore.get_run`` returns it), replayed from its history."""
    history = {name: list(zip(steps.tolist(), values.tolist(), strict=True))
               for name, (steps, values) in store.metrics(run["id"], HISTORY_KEYS).items()}
    return judge(history, run["status"], judging_of_config(run.get("config") or {}))
