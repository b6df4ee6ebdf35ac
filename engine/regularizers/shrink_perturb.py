"""Shrink & Perturb: θ ← s·θ + σ·ε at (task) boundaries, to restore plasticity."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.regularizers.base import Param, Regularizer, Setup, register


@torch.no_grad()
def shrink_perturb_(params: list[nn.Parameter], shrink: float, sigma: float, generator: torch.Generator) -> None:
    """In place, for every parameter in order: θ ← s·θ + σ·ε, ε ~ N(0, I) drawn on the CPU from
    ``generator`` (one draw of θ's shape per parameter, even when σ = 0, so the stream does not
    depend on σ)."""
    for p in params:
        eps = torch.randn(p.shape, generator=generator).to(device=p.device, dtype=p.dtype)
        p.mul_(shrink).add_(eps, alpha=sigma)


@register
class ShrinkPerturb(Regularizer):
    """At task boundaries shrink all weights toward 0 and add small noise, θ ← s·θ + σ·ε (restores plasticity).

    *On Warm-Starting Neural Network Training* (Ash & Adams, NeurIPS 2020); a plasticity baseline
    in the continual-learning literature. Formula as in the lab reference:
    θ ← s·θ + σ·ε with ε ~ N(0, I) (the paper's perturbation is noise from the init
    distribution; a fixed σ is the common simplification). Applied to *all* trainable parameters,
    biases included, after the optimizer step of every update numbered a multiple of ``every``
    — meant to sit at task boundaries; the lab has no task sequence, so set ``every`` to the
    task length in updates. The last update of the run is never followed by a shrink, so the
    final evaluation sees the trained weights. After perturbing, the model's own constraints
    are re-applied (``model.after_optimizer_step()``: the SAE's unit-norm decoder columns). ε is
    drawn on the CPU from the technique's generator. Optimizer state (Adam moments) is kept.
    """

    name = "shrink_perturb"
    group = "continual"
    source = "On Warm-Starting Neural Network Training (Ash & Adams, NeurIPS 2020)"
    params = (
        Param("shrink", float, 0.8, 0.0, 1.0, live=True, help="shrink factor s in θ ← sθ + σε (1 = no shrink)"),
        Param("sigma", float, 0.01, 0.0, 1.0, live=True, log=True, help="noise std σ in θ ← sθ + σε"),
        Param("every", int, 1000, 1, 10_000_000, help="apply after every this many updates (the task length)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self._params = [p for p in setup.model.parameters() if p.requires_grad]
        self.applied = 0  # number of shrink-perturb events so far

    def due(self, step: int) -> bool:
        """Whether the update numbered ``step`` (1-based) ends a task: a multiple of ``every``, not the last."""
        return step % self["every"] == 0 and step < self.setup.total_steps

    def after_step(self, step: int) -> None:
        if not self.due(step):
            return
        shrink_perturb_(self._params, self["shrink"], self["sigma"], self.generator)
        constrain = getattr(self.setup.model, "after_optimizer_step", None)
        if callable(constrain):
            constrain()
        self.applied += 1
