"""The cheap first part of the grokking-transformer preset (Nanda et al. 2023) through the CLI.

The full run (p = 113, Nanda et al.'s 1-layer transformer, wd 1 groks after ~10k full-batch
steps) takes ≈ 0.12 s a step on one CPU thread — half an hour and more — so it is a GPU /
background preset. What is checked here, in ≈ 25 s: the preset's model memorises the training
pairs within 150 steps while test accuracy stays near chance (1/113), and the regularized variant
is weight decay 1 acting on the same run (decoupled decay shrinks the weights from the first steps).
Full batch, so single-seed values are exact regressions; measured on this machine (torch 2.13 CPU).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.repro


def test_transformer_memorises_first_and_the_weight_decay_toggle_is_wired(run_preset) -> None:
    _, base = run_preset("grokking-transformer", "train.steps=150", "train.eval_every=50")
    assert base.at("train/acc", 100) < 1.0                   # measured 0.655
    assert base.at("train/acc", 150) == 1.0                  # measured 1.000
    assert base.at("test/acc", 150) <= 0.05                  # measured 0.015 (chance 0.009)
    summary, decayed = run_preset("grokking-transformer", "train.steps=50", "train.eval_every=50",
                                  variant="regularized")
    assert summary["status"] == "completed"
    assert decayed.at("weights/norm", 0) == base.at("weights/norm", 0)   # same init: only the toggle differs
    assert decayed.at("weights/norm", 50) <= base.at("weights/norm", 50) - 1.0  # measured 44.14 vs 46.00
