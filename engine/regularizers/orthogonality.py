"""Soft orthogonality: λ‖WWᵀ − I‖_F² (or its off-diagonal part) on every weight matrix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register
from engine.regularizers.nuclear_norm import matrix_layers


def orthogonality_penalty(w: Tensor, variant: str = "full") -> Tensor:
    """‖GG − I‖_F² (``full``) or ‖G ⊙ (1 − I)‖_F² (``offdiag``) with G = WWᵀ, or WᵀW when W has
    more rows than columns (so the Gram matrix is the smaller one and ``full`` can reach 0)."""
    w = w.flatten(1)
    gram = w.T @ w if w.shape[0] > w.shape[1] else w @ w.T
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    if variant == "full":
        return (gram - eye).pow(2).sum()
    return (gram * (1.0 - eye)).pow(2).sum()


@register
class Orthogonality(Regularizer):
    """Add λ·Σ_l ‖W_lW_lᵀ − I‖_F² so weight rows stay near-orthonormal (or only decorrelated: offdiag).

    Soft orthogonality as in *Learn to Preserve and Diversify* (PEGO; Hu et al., 2024) and, for the
    off-diagonal variant, *Large Scale GAN Training for High Fidelity Natural Image Synthesis*
    (BigGAN; Brock et al., 2019, which uses λ ≈ 1e-4). ``full``: λ‖WWᵀ − I‖_F², using WᵀW when
    the layer has more outputs than inputs (then the columns are made orthonormal); ``offdiag``:
    λ‖WWᵀ ⊙ (1 − I)‖_F², which leaves row norms free. No ½. Covers every ``nn.Linear`` and
    ``nn.Conv2d`` (kernels flattened to out × in·kh·kw), readout included; biases are not
    touched. Exactly 0 for a matrix with orthonormal rows.
    """

    name = "orthogonality"
    group = "repr"
    source = ("Learn to Preserve and Diversify: Parameter-Efficient Group with Orthogonal Regularization "
              "(PEGO; Hu et al., 2024); Large Scale GAN Training for High Fidelity Natural Image Synthesis "
              "(Brock et al., 2019)")
    params = (
        Param("lambda", float, 1e-4, 0.0, 0.1, live=True, log=True, help="strength λ of λ‖WWᵀ − I‖_F²"),
        Param("variant", str, "full", choices=("full", "offdiag"),
              help="full: ‖WWᵀ − I‖²; offdiag: only the off-diagonal of WWᵀ (BigGAN)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.layers = matrix_layers(setup.model)

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if not self.layers:
            return None
        variant = self["variant"]
        return self["lambda"] * sum(orthogonality_penalty(m.weight, variant) for m in self.layers)
