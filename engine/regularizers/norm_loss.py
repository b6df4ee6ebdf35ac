"""Norm Loss: keep every unit's incoming weight vector on the unit sphere."""

from __future__ import annotations

from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, register, weight_matrices


def norm_loss_penalty(weights: list[Tensor], lam: float) -> Tensor:
    """λ·Σ_layers Σ_j (1 − ‖w_j‖)², w_j = row j of the weight flattened to (out, −1) (one unit/filter).

    Gradient w.r.t. w_j: −2λ(1 − ‖w_j‖)·w_j/‖w_j‖ (radial only).
    """
    total = weights[0].new_zeros(())
    for w in weights:
        norms = w.flatten(1).norm(dim=1)
        total = total + (1.0 - norms).pow(2).sum()
    return lam * total


@register
class NormLoss(Regularizer):
    """Add λ·Σ_j (1 − ‖w_j‖)² over every unit's weight vector, pulling each onto the unit sphere.

    *Norm Loss: An efficient yet effective regularization method for deep neural networks*
    (Georgiou et al., ICPR 2020; verify the exact normalisation against the paper), techniques
    candidates. w_j is the incoming weight vector of output unit / filter j: row j of each
    weight matrix or kernel (dim ≥ 2) flattened to (out, −1); biases are not included. Summed
    over units and layers, no ½, so the gradient is −2λ(1 − ‖w_j‖)·w_j/‖w_j‖ — purely radial,
    zero for unit-norm rows. Unlike weight decay it has a non-zero target norm (1), so it bounds
    the effective learning rate from both sides.
    """

    name = "norm_loss"
    group = "norm"
    source = ("Norm Loss: An efficient yet effective regularization method for deep neural networks "
              "(Georgiou et al., 2020; verify)")
    params = (
        Param("lambda", float, 1e-3, 1e-6, 1.0, live=True, log=True, help="strength λ of λΣ_j(1 − ‖w_j‖)²"),
    )

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        weights = list(weight_matrices(ctx.model))
        if not weights:
            return None
        return norm_loss_penalty(weights, self["lambda"])
