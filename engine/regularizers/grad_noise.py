"""Annealed Gaussian gradient noise."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.regularizers._common import elapsed_steps
from engine.regularizers.base import Param, Regularizer, register


@register
class GradNoise(Regularizer):
    """Add decaying Gaussian noise N(0, σ_t²) to every gradient, σ_t² = η/(1 + t)^γ, to explore early.

    *Adding Gradient Noise Improves Learning for Very Deep Networks* (Neelakantan et al., 2015).
    η is a *variance* (the paper's grid is {0.01, 0.3, 1.0}); t counts optimizer steps from 0:
    the trainer numbers updates 1..T, so t = step − 1. Runs last in the after_backward chain (order 20): after
    clipping, so the noise itself is never clipped, and before the optimizer step. Noise is
    drawn on the CPU from the technique's own generator and moved to the device, so it never
    shifts any other random stream; with η = 0 nothing is drawn or added (bit-identical to no
    noise). Metric: ``grad/noise_std`` = σ_t.
    """

    name = "grad_noise"
    group = "optimizer"
    source = "Adding Gradient Noise Improves Learning for Very Deep Networks (Neelakantan et al., 2015)"
    order = 20
    params = (
        Param("eta", float, 0.01, 0.0, 1.0, live=True, help="noise variance η at t = 0"),
        Param("gamma", float, 0.55, 0.0, 1.0, help="decay exponent γ of σ_t² = η/(1+t)^γ"),
    )

    def sigma_at(self, step: int) -> float:
        """σ_t for the update the trainer numbers ``step`` (1-based), t = step − 1."""
        return math.sqrt(self["eta"] / (1.0 + elapsed_steps(step)) ** self["gamma"])

    def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
        sigma = self.sigma_at(step)
        if sigma == 0.0:
            return {"grad/noise_std": 0.0}
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    continue
                noise = torch.randn(p.grad.shape, generator=self.generator, dtype=p.grad.dtype)
                p.grad.add_(noise.to(p.grad.device), alpha=sigma)
        return {"grad/noise_std": sigma}
