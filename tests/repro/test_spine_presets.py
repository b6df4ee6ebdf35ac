"""Reproduction checks (phenomena.md) for the presets the engine spine ships, via the CLI path.

Measured on this machine (torch 2.13 CPU, one thread, seed as in the preset) — the thresholds
leave margin and the measured value is written beside each.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.repro


def test_grokking_quadratic_memorises_then_groks_and_weight_decay_shortens_it(run_preset) -> None:
    summary, h = run_preset("grokking-quadratic")
    assert summary["status"] == "completed"
    assert h.at("train/acc", 50) == 1.0                      # measured 1.0000
    assert h.at("test/acc", 100) < 0.25                      # measured 0.101 (chance 0.010)
    assert h.at("test/acc", 300) > 0.95                      # measured 0.999
    grok_step = h.first_step("test/acc", 0.95)               # measured 260
    _, h_wd = run_preset("grokking-quadratic", "optim.weight_decay=5", "train.steps=200")
    grok_step_wd = h_wd.first_step("test/acc", 0.95)         # measured 80
    assert grok_step is not None and grok_step_wd is not None
    assert grok_step - grok_step_wd >= 100                   # measured 180


def test_noisy_labels_ce_memorises_and_elr_does_not(run_preset) -> None:
    _, ce = run_preset("noisy-labels")
    best_ce = max(ce["test/acc"].values())
    assert best_ce >= 0.88                                   # measured 0.933 (epoch 10)
    assert ce.last("test/acc") <= best_ce - 0.15             # measured 0.675 at epoch 100
    assert ce.last("noisy/memorized_frac") >= 0.7            # measured 1.000
    _, elr = run_preset("noisy-labels", "regularizers.elr.lambda=3", "regularizers.elr.beta=0.7")
    assert elr.last("test/acc") >= 0.93                      # measured 0.960 (best 0.968)
    assert elr.last("noisy/memorized_frac") <= 0.1           # measured 0.042
    assert elr.last("test/acc") > ce.last("test/acc") + 0.15


def test_edge_of_stability_trains_with_non_monotone_loss(run_preset) -> None:
    summary, h = run_preset("edge-of-stability")
    assert summary["status"] == "completed"
    loss = h["train/loss"]
    assert loss[1000] < loss[300]                            # measured 0.103 < 0.149
    increases = sum(loss[s + 1] > loss[s] for s in range(500, 1000))
    assert increases >= 3                                    # measured 174 (GD at 2/η: loss not monotone)
    assert h.at("train/acc", 1000) >= 0.95                   # measured 0.978
    sharp, threshold = h["sharpness/top_eig"], h.at("sharpness/threshold", 1000)
    assert threshold == pytest.approx(2 / 0.4)
    assert max(v for s, v in sharp.items() if s <= 300) < threshold          # measured 4.35 < 5
    hover = sorted(v for s, v in sharp.items() if 600 <= s <= 1000)
    assert 0.9 * threshold <= hover[len(hover) // 2] <= 1.15 * threshold     # measured median 5.15
    _, half = run_preset("edge-of-stability", "optim.lr=0.2")
    assert max(half["sharpness/top_eig"].values()) < 2 / 0.2                  # measured max 5.54


def test_orthograd_groks_where_the_baseline_memorises(run_preset) -> None:
    _, base = run_preset("grokking-orthograd", "train.steps=200")
    assert base.at("train/acc", 200) == 1.0                  # measured 1.000
    assert base.at("test/acc", 200) <= 0.02                  # measured 0.000–0.001
    _, ortho = run_preset("grokking-orthograd", "regularizers.orthograd.enabled=true", "train.steps=200")
    assert ortho.at("test/acc", 200) >= 0.98                 # measured 1.000 (0.9997 at step 150)
