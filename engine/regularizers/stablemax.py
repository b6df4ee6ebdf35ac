"""StableMax: a softmax replacement with linear growth, which cannot collapse numerically."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.regularizers.base import Regularizer, register

TINY = 1e-30


def stablemax_s(x: Tensor) -> Tensor:
    """s(x) = x + 1 for x ≥ 0, 1/(1 − x) for x < 0: positive, increasing, s(0) = 1, s′(0±) = 1."""
    return torch.where(x < 0, 1.0 / (1.0 - x + TINY), x + 1.0)


def log_stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    """log StableMax(z) = log(s(z_i) / Σ_j s(z_j)), computed in float64 (returned as float64)."""
    s = stablemax_s(logits.to(torch.float64))
    return torch.log(s / (s.sum(dim=dim, keepdim=True) + TINY))


@register
class StableMax(Regularizer):
    """Replace softmax by s(z_i)/Σ_j s(z_j) with s linear for z ≥ 0, so probabilities never round to exactly 1.

    *Grokking at the Edge of Numerical Stability* (Prieto et al., ICLR 2025), following the
    reference implementation: s(x) = x + 1 (x ≥ 0), 1/(1 − x) (x < 0); computed in float64 with
    +1e-30 in the denominators. Because s grows linearly rather than exponentially, the
    correct-class probability does not round to 1, which prevents softmax collapse (the
    gradient of the loss vanishing numerically). Replaces softmax in the loss and in every
    reported probability: calibration panels then show StableMax probabilities. The output is
    float64 log-probabilities; autograd casts the gradient back to the logits' dtype.
    """

    name = "stablemax"
    group = "grokking"
    source = "Grokking at the Edge of Numerical Stability (Prieto et al., 2025)"
    tasks = ("classification",)

    def output_fn(self, logits: Tensor) -> Tensor:
        return log_stablemax(logits, dim=-1)
