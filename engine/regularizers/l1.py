"""L1 weight penalty: subgradient in the loss, or a proximal soft-threshold after each step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register, weight_matrices


def soft_threshold_(w: Tensor, threshold: float) -> None:
    """In place: w ← sign(w)·max(|w| − threshold, 0) (the proximal map of threshold·|w|)."""
    w.copy_(w.sign() * (w.abs() - threshold).clamp_min(0.0))


@register
class L1(Regularizer):
    """Penalise λ·Σ|w| to drive weights to exactly zero (sparse weights).

    Lasso penalty (*Regression Shrinkage and Selection via the Lasso*, Tibshirani 1996); the
    proximal mode is ISTA's soft-threshold step. Two modes, because the literature uses both:

    - ``subgradient``: λΣ|w| is added to the loss and autograd uses sign(w) (0 at 0). The
      weights oscillate around 0 with amplitude ≈ η·λ and are rarely exactly 0.
    - ``proximal``: nothing is added to the loss; after each optimizer step
      w ← sign(w)·max(|w| − η·λ, 0) with η = the current learning rate. Produces exact zeros.
      (No ``reg/l1`` term is logged in this mode, since the penalty is not in the loss.)

    Weights only (dim ≥ 2) unless ``include_bias``. Plot ‖θ‖₁, not only the penalty: under
    non-differentiable GD ‖θ*‖₁ can grow with λ (*GD doesn't make the cut*).
    """

    name = "l1"
    group = "norm"
    source = "Regression Shrinkage and Selection via the Lasso (Tibshirani, 1996)"
    params = (
        Param("lambda", float, 1e-5, 0.0, 1e-2, live=True, log=True, help="strength λ of λΣ|w|"),
        Param("mode", str, "subgradient", choices=("subgradient", "proximal"),
              help="subgradient: in the loss; proximal: soft-threshold by lr·λ after each step"),
        Param("include_bias", bool, False, help="also penalise biases and other 1-D parameters"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self._params = list(weight_matrices(setup.model, self["include_bias"]))

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if self["mode"] != "subgradient" or not self._params:
            return None
        return self["lambda"] * sum(w.abs().sum() for w in self._params)

    def after_step(self, step: int) -> None:
        if self["mode"] != "proximal":
            return
        threshold = self.setup.lr() * self["lambda"]
        if threshold <= 0.0:
            return
        with torch.no_grad():
            for w in self._params:
                soft_threshold_(w, threshold)
