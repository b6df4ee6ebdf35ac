"""Outcome verdicts (engine/outcome.py): every rule on constructed histories, with its reason."""

from __future__ import annotations

import math

import pytest

from engine.outcome import (
    Judging,
    OutcomeTracker,
    classify_outcome,
    divergence,
    grokking_onset,
    judge,
    train_test_gap,
)

STEPS = [0, 50, 100, 150, 200, 250, 300]


def history(train: list[tuple[int, float]], test: list[tuple[int, float]], **extra: list[tuple[int, float]]
            ) -> dict[str, list[tuple[int, float]]]:
    return {"train/acc": train, "test/acc": test, **{k.replace("__", "/"): v for k, v in extra.items()}}


def test_grokking_and_plain_generalisation() -> None:
    grokking = history([(s, 0.1 if s == 0 else 1.0) for s in STEPS], [(s, min(1.0, s / 260)) for s in STEPS])
    verdict = judge(grokking, "completed")
    assert verdict is not None and verdict.outcome == "grokked"
    assert "step 50" in verdict.reason and "step 250" in verdict.reason and "5.0× later" in verdict.reason
    assert grokking_onset(grokking) == 250
    together = history([(s, min(1.0, s / 150)) for s in STEPS], [(s, min(1.0, s / 150)) for s in STEPS])
    assert judge(together, "completed").outcome == "generalized"
    assert grokking_onset(together) is None


def test_grokking_needs_both_the_ratio_and_the_delay() -> None:
    assert classify_outcome(history([(10, 0.99)], [(30, 0.95)]), "completed") == "generalized"  # 30 = 3·10
    assert classify_outcome(history([(10, 0.99)], [(40, 0.95)]), "completed") == "generalized"  # delay 30 < 50
    assert classify_outcome(history([(20, 0.99)], [(70, 0.95)]), "completed") == "grokked"  # 70 > 60, delay 50


def test_generalisation_does_not_need_the_training_labels_fitted() -> None:
    # a run whose test accuracy reaches the threshold is generalized even if train accuracy stays < 0.99
    verdict = judge(history([(10, 0.989)], [(40, 0.99)]), "completed")
    assert verdict.outcome == "generalized" and verdict.reason == "test acc 0.99 ≥ 0.95"
    assert classify_outcome(history([(0, 0.5), (100, 1.0)], [(0, 0.1), (50, 0.96)]), "completed") == "generalized"


def test_memorised_training_set_below_threshold() -> None:
    below_chance = history([(s, 1.0) for s in STEPS], [(s, 0.0) for s in STEPS])
    verdict = judge(below_chance, "completed", Judging(num_classes=97))
    assert verdict.outcome == "memorized" and "test acc 0.00 < 0.95" in verdict.reason
    assert train_test_gap(below_chance) == 1.0
    assert classify_outcome(history([(10, 1.0)], [(40, 0.949)]), "completed") == "memorized"


def test_label_noise_judges_fit_on_clean_labels_and_memorisation_on_wrong_ones() -> None:
    noisy = Judging(num_classes=10, label_noise=0.4)
    elr = history([(100, 0.58)], [(100, 0.96)], train__acc_clean=[(100, 0.97)], noisy__memorized_frac=[(100, 0.04)])
    verdict = judge(elr, "completed", noisy)
    assert verdict.outcome == "generalized"
    assert verdict.reason == "test acc 0.96 ≥ 0.95; only 4 % of the 40 % wrong labels were fitted"
    ce = history([(100, 1.0)], [(100, 0.675)], train__acc_clean=[(100, 1.0)], noisy__memorized_frac=[(100, 1.0)])
    verdict = judge(ce, "completed", noisy)
    assert verdict.outcome == "memorized" and "100 % of the 40 % wrong labels were fitted" in verdict.reason
    # fitting the clean labels but few wrong ones, with test below threshold: learned, not memorised
    middle = history([(100, 0.7)], [(100, 0.9)], train__acc_clean=[(100, 0.95)], noisy__memorized_frac=[(100, 0.1)])
    assert judge(middle, "completed", noisy).outcome == "partial"


def test_few_labels_judge_fit_on_the_labelled_subset() -> None:
    few = Judging(num_classes=2, few_labels=True)
    supervised = history([(100, 0.84)], [(100, 0.84)], train__acc_labeled=[(100, 1.0)])
    verdict = judge(supervised, "completed", few)
    assert verdict.outcome == "memorized" and verdict.reason.startswith("labelled train acc 1.00")
    assert judge(history([(100, 0.99)], [(100, 0.975)], train__acc_labeled=[(100, 1.0)]), "completed",
                 few).outcome == "generalized"


def test_no_learning_is_relative_to_chance_and_partial_otherwise() -> None:
    stuck = history([(s, 0.5) for s in STEPS], [(s, 0.5) for s in STEPS])
    verdict = judge(stuck, "completed", Judging(num_classes=2))
    assert verdict.outcome == "no_learning" and "chance (0.50)" in verdict.reason
    assert judge(stuck, "completed", Judging(num_classes=10)).outcome == "partial"  # 0.5 is far above 0.1
    assert judge(history([(0, 0.08), (300, 0.09)], [(300, 0.07)]), "completed",
                 Judging(num_classes=10)).outcome == "no_learning"  # 0.09 ≤ 0.1 + 0.1·0.9


def test_divergence_by_status_non_finite_or_blow_up() -> None:
    fine = history([(s, 1.0) for s in STEPS], [(s, 1.0) for s in STEPS])
    assert judge(fine, "diverged").outcome == "diverged"
    nan = judge({**fine, "train/loss_full": [(0, 0.3), (10, math.nan)]}, "completed")
    assert nan.outcome == "diverged" and nan.reason == "loss became nan at step 10"
    blown = judge({**fine, "train/loss": [(1, 2.3), (5, 10.0), (9, 2.5e15)]}, "completed")
    assert blown.outcome == "diverged" and "at step 9" in blown.reason and "2.5e+15" in blown.reason
    assert judge({**fine, "train/loss": [(1, 2.3), (9, 2.3e4 * 0.999)]}, "completed").outcome == "generalized"
    assert divergence(2.3e4 + 1, 2.3) and not divergence(2.3e4, 2.3) and not divergence(1e9, 0.0)


def test_stopped_gives_no_verdict_on_the_phenomenon_and_failed_none() -> None:
    tracker = OutcomeTracker(Judging(num_classes=10, total_steps=1900))
    tracker.update(0, {"train/acc": 0.1, "test/acc": 0.1})
    tracker.update(230, {"train/acc": 0.8, "test/acc": 0.81})
    verdict = tracker.verdict("stopped")
    assert verdict.outcome == "stopped" and verdict.reason == "stopped by the user at step 230 of 1900; " \
                                                              "test acc 0.81 so far"
    assert tracker.verdict("failed") is None and tracker.outcome("running") == ""


def test_regression_is_judged_on_r2_and_sae_reason_names_dead_latents() -> None:
    regression = Judging(task="regression")
    def r2(train: float, test: float) -> dict[str, list[tuple[int, float]]]:
        return {"train/r2": [(0, 0.0), (100, train)], "test/r2": [(0, 0.0), (100, test)]}
    assert judge(r2(0.99, 0.97), "completed", regression).outcome == "generalized"
    assert judge(r2(0.995, 0.6), "completed", regression).outcome == "memorized"
    assert judge(r2(0.05, 0.02), "completed", regression).outcome == "no_learning"
    sae = judge({**r2(0.73, 0.73), "sae/dead_frac": [(100, 0.49)]}, "completed", Judging(task="reconstruction"))
    assert sae.outcome == "partial"
    assert sae.reason == "test R² 0.730 (FVU 0.270), train R² 0.730: below 0.95; dead latents 49 %"


def test_a_preset_threshold_moves_the_line() -> None:
    ridge = history([(100, 0.9)], [(100, 0.836)])
    assert classify_outcome(ridge, "completed", Judging(num_classes=10)) == "partial"
    assert classify_outcome(ridge, "completed", Judging(num_classes=10, test_threshold=0.8)) == "generalized"


def test_tracker_matches_the_replay_whatever_the_order() -> None:
    evals = [(0, {"train/acc": 0.1, "test/acc": 0.0}), (50, {"train/acc": 1.0, "test/acc": 0.02}),
             (250, {"train/acc": 1.0, "test/acc": 0.97, "train/loss_full": 0.01})]
    tracker = OutcomeTracker()
    for step, metrics in evals:
        tracker.update(step, metrics)
    assert (tracker.t_fit, tracker.t_test) == (50, 250)
    assert tracker.outcome("completed") == "grokked"
    shuffled = {"test/acc": [(250, 0.97), (0, 0.0), (50, 0.02)], "train/acc": [(50, 1.0), (250, 1.0), (0, 0.1)]}
    assert classify_outcome(shuffled, "completed") == "grokked"
    assert train_test_gap({"train/acc": [(0, 1.0)]}) is None


@pytest.mark.parametrize("noise,few,key", [(0.0, False, "train/acc"), (0.4, False, "train/acc_clean"),
                                           (0.0, True, "train/acc_labeled")])
def test_fit_key_follows_the_labels_the_model_should_fit(noise: float, few: bool, key: str) -> None:
    assert Judging(label_noise=noise, few_labels=few).fit_key == key
