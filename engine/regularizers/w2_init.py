"""Wasserstein-to-init: keep each parameter tensor's value distribution near its initial one."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register


def w2_term(param: Tensor, sorted_init: Tensor) -> Tensor:
    """Σ_i (sort θ − sort θ₀)_i²: the squared 1-D Wasserstein-2 distance × n between the empirical
    distributions of θ's entries and of θ₀'s (no ½). Its gradient w.r.t. θ_j is
    2(θ_j − sort(θ₀)[rank of θ_j]), and it is 0 for any permutation of θ₀."""
    return (torch.sort(param.flatten()).values - sorted_init).pow(2).sum()


@register
class W2Init(Regularizer):
    """Add λ·Σ_l Σ_i (sort θ_l − sort θ_l,0)_i²: keep each layer's weight distribution (not the weights) near init.

    Wasserstein regularization toward the initial distribution, from
    *Directions of Curvature as an Explanation for Loss of Plasticity* (Lewandowski et al., 2024),
    a plasticity baseline next to L2-to-init (Kumar et al., 2023) and spectral regularization.
    Unlike L2-to-init, which pulls every weight back to its own initial value, this only pulls the
    *sorted* values back, so weights may permute freely: any permutation of θ₀ has zero penalty.
    Each parameter tensor is one distribution θ_l (biases included when ``include_bias``; by
    default only weight matrices/kernels, dim ≥ 2). Sum, not mean, over entries, and no ½, as in
    the reference formula: ∂/∂θ_j = 2λ(θ_j − sort(θ₀)[rank θ_j]). Sorted θ₀ is captured when the
    technique is built (right after the model's init). Verify against the paper: the exact
    normalisation (sum vs mean over entries, per layer vs global) is taken from the lab reference.
    Cost: one sort per parameter tensor per update.
    """

    name = "w2_init"
    group = "continual"
    source = "Directions of Curvature as an Explanation for Loss of Plasticity (Lewandowski et al., 2024)"
    params = (
        Param("lambda", float, 1e-3, 1e-5, 0.1, live=True, log=True,
              help="strength λ of λΣ_lΣ_i(sort θ_l − sort θ_l,0)_i²"),
        Param("include_bias", bool, False, help="also regularize biases and other 1-D parameters"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.anchors: list[tuple[torch.nn.Parameter, Tensor]] = [
            (p, torch.sort(p.detach().flatten()).values.clone())
            for p in setup.model.parameters()
            if p.requires_grad and (p.dim() >= 2 or self["include_bias"])
        ]

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if not self.anchors:
            return None
        return self["lambda"] * sum(w2_term(p, init) for p, init in self.anchors)
