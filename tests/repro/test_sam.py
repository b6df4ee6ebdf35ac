"""sam (Foret et al. 2021) through the CLI: SAM vs SGD, sharpness compared at matched training loss.

Mini-batch SGD is stochastic, so the checks are paired per seed (same split, init and batch
order; only ρ differs) over three seeds. With cross-entropy the Hessian shrinks with the loss and
SAM also reaches a lower loss (3.9e-4 vs 7.2e-4 after 1,920 steps), so final sharpness alone is
confounded (the card's caveat): λ_max is read where each run's full-batch training loss
crosses the same value, interpolated log-log between the two bracketing checkpoints (both every
32 steps). Measured on this machine (torch 2.13 CPU, one thread; seeds 0–4 in the preset card).
≈ 2.5–5 s CPU per run.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

pytestmark = pytest.mark.repro

SEEDS = (0, 1, 2)


def sharpness_at_loss(h, target: float) -> float:
    """λ_max where train/loss_full first falls through ``target`` (log-log interpolation)."""
    loss, eig = h["train/loss_full"], h["sharpness/top_eig"]
    steps = sorted(s for s in loss if s in eig)
    for a, b in pairwise(steps):
        if loss[a] >= target > loss[b]:
            t = math.log(loss[a] / target) / math.log(loss[a] / loss[b])
            return math.exp((1 - t) * math.log(eig[a]) + t * math.log(eig[b]))
    raise AssertionError(f"train loss never crossed {target}")


def test_sam_is_flatter_at_matched_training_loss_without_losing_accuracy(run_preset) -> None:
    ratios: dict[float, list[float]] = {1e-2: [], 1e-3: []}
    acc_gaps = []
    for seed in SEEDS:
        _, sgd = run_preset("sam", f"seed={seed}")
        _, sam = run_preset("sam", f"seed={seed}", "regularizers.sam.rho=0.05")
        for target, found in ratios.items():
            found.append(sharpness_at_loss(sam, target) / sharpness_at_loss(sgd, target))
        acc_gaps.append(sam.last("test/acc") - sgd.last("test/acc"))
    # λ_max(SAM)/λ_max(SGD) at loss 1e-2, seeds 0–2: measured 0.76, 0.70, 0.78 (0.565/0.740, …)
    assert max(ratios[1e-2]) < 0.9
    # … and at loss 1e-3: measured 0.65, 0.78, 0.74
    assert max(ratios[1e-3]) < 0.9
    # test accuracy: no generalisation gain is measurable here, but SAM costs none either
    assert min(acc_gaps) >= -0.02                          # measured −0.004, +0.004, +0.001
    assert sum(acc_gaps) / len(acc_gaps) >= -0.01          # measured +0.0004
