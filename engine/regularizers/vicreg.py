"""VICReg variance and covariance terms as an auxiliary loss on the penultimate features."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers._features import PenultimateFeatures
from engine.regularizers.base import LossContext, Need, Param, Regularizer, Setup, register

EPS = 1e-4


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = EPS) -> Tensor:
    """v(z) = (1/d)·Σ_j max(0, γ − √(Var z_j + ε)), Var unbiased over the batch (B − 1)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return torch.relu(gamma - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """c(z) = (1/d)·Σ_{i≠j} C_ij², C = Z_cᵀZ_c/(B − 1) with Z_c the batch-centred features."""
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.T @ zc / (z.shape[0] - 1)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return off.pow(2).sum() / z.shape[1]


@register
class VICReg(Regularizer):
    """Add w·(μ·v(z) + ν·c(z)) on the batch's features: keep every dimension's std ≥ γ and decorrelate them.

    Variance and covariance terms of *VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning* (Bardes, Ponce & LeCun, ICLR 2022), used as an auxiliary loss next
    to the data loss (the invariance term needs two views and is not part of
    this technique). On the penultimate features z (B × d, flattened):
    v(z) = (1/d)Σ_j max(0, γ − √(Var z_j + ε)), c(z) = (1/d)Σ_{i≠j} C_ij², C the batch covariance
    (both with B − 1), ε = 1e-4; penalty w·(μ·v + ν·c).

    Where z comes from: ``ctx.features`` when the trainer provides it; else the input of the
    dropout slot feeding the readout, captured by a forward pre-hook during the training forward
    (free; registered first, so it sees the features before nested dropout or dropout touch
    them); else — models without such a slot (the transformer) — one extra
    ``model.features(batch.x)`` forward per update, which roughly doubles the trunk's forward cost.
    Batches of one sample carry no covariance: the term is skipped. Refused for the sae: its
    latents are meant to be sparse, which the variance term (every std ≥ γ) directly opposes.
    """

    name = "vicreg"
    group = "repr"
    requires = (
        Need(why="its variance term pushes every feature's std up to γ, while sparse-autoencoder latents are "
                 "meant to be sparse",
             fix="disable vicreg or use another model", model_lacks=frozenset({"sae_latents"})),
    )
    source = "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning (Bardes et al., 2022)"
    params = (
        Param("mu", float, 25.0, 0.0, 100.0, help="weight μ of the variance term v(z)"),
        Param("nu", float, 1.0, 0.0, 100.0, help="weight ν of the covariance term c(z)"),
        Param("gamma", float, 1.0, 0.1, 2.0, help="target std γ of every feature dimension"),
        Param("w", float, 0.01, 0.0, 1.0, live=True, help="overall weight w of μ·v + ν·c next to the data loss"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.features = PenultimateFeatures(setup.model, getattr(setup.dataset, "x_train", None))
        self.slot = self.features.slot

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        z = self.features(ctx).flatten(1)
        if z.shape[0] < 2:
            return None
        penalty = self["mu"] * variance_term(z, self["gamma"]) + self["nu"] * covariance_term(z)
        return self["w"] * penalty
