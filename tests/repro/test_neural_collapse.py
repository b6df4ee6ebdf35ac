"""neural-collapse (Papyan, Han & Donoho 2020) through the CLI: NC1 collapse under MSE, and what weight decay adds.

Full-batch and deterministic: single seed (the preset's seed 0), NC metrics every 100 steps on the
whole training set. Measured on this machine (torch 2.13 CPU, one thread); seeds 1 and 2 gave
the same picture (preset card). ≈ 6–9 s CPU per run.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.repro


def test_mse_collapses_within_class_variability_and_weight_decay_aligns_the_classifier(run_preset) -> None:
    _, base = run_preset("neural-collapse")                                # weight decay 0
    nc1 = base["nc/nc1"]
    assert nc1[1000] <= 0.1 * nc1[0]                                       # measured 0.0096 vs 1.18 (×0.008)
    assert base.at("train/acc", 1500) == 1.0                               # measured 1.000 (terminal phase)
    assert base.at("nc/nc3", 1500) >= 0.25                                 # measured 0.414: W not ∝ class means
    assert base.at("nc/nc3", 1500) > base.at("nc/nc3", 500)                # measured 0.414 > 0.352 (drifts away)

    _, wd = run_preset("neural-collapse", "optim.weight_decay=0.001")      # the regularized variant
    nc1 = wd["nc/nc1"]
    assert nc1[1000] <= 0.1 * nc1[0]                                       # measured 0.0136 vs 1.18 (×0.012)
    assert wd.at("train/acc", 1000) == 1.0                                 # measured 1.000
    assert wd.at("nc/max_angle", 1500) <= 0.12                             # measured 0.053
    assert wd.at("nc/nc4", 1500) <= 0.01                                   # measured 0.000
    assert wd.at("nc/nc3", 1500) < wd.at("nc/nc3", 500)                    # measured 0.083 < 0.173
    assert wd.at("nc/nc3", 1500) <= 0.5 * base.at("nc/nc3", 1500)          # measured 0.083 vs 0.414
    assert wd.at("nc/max_angle", 1500) < base.at("nc/max_angle", 1500)     # measured 0.053 < 0.084
