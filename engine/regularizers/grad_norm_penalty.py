"""Gradient-norm penalty by double backprop: L + λ‖∇L‖ (or λ‖∇L‖²)."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, register


def grad_norm_penalty(loss: Tensor, params: list[Tensor], lam: float, form: str = "norm") -> Tensor:
    """λ‖∇_θ loss‖₂ (``norm``) or λ‖∇_θ loss‖₂² (``squared``), differentiable in θ.

    g = autograd.grad(loss, θ, create_graph=True); the penalty's gradient is λHg/‖g‖ (norm) or
    2λHg (squared), H the Hessian of ``loss``. Parameters the loss does not reach count as 0.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    sq = sum((g.pow(2).sum() for g in grads if g is not None), loss.new_zeros(()))
    if form == "squared":
        return lam * sq
    return lam * sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()  # clamp: gradient 0, not NaN, at g = 0


@register
class GradNormPenalty(Regularizer):
    """Add λ‖∇_θ L‖ (or λ‖∇_θ L‖²) to the loss, steering towards flat regions via double backprop.

    Penalty form of *Incorporating Surrogate Gradient Norm to Improve Offline Optimization
    Techniques* (IGNITE, 2024), whose constrained Lagrangian version is simplified here to a
    plain penalty; the squared form is the one used in *Stochastic Training is
    Not Necessary for Generalization* (Geiping et al., 2022):

        norm:    L + λ‖g‖₂       gradient of the term: λHg/‖g‖
        squared: L + λ‖g‖₂²      gradient of the term: 2λHg
        g = autograd.grad(L, θ, create_graph=True)   (all trainable parameters, jointly)

    L is the *mini-batch* data loss as trained (after target transforms and the labelled-row
    mask, before other penalties): the lab penalises ‖∇L_B‖ of each mini-batch, whose mean is
    not ‖∇L_full‖ — with full batches the two coincide. Costs about one more backward pass
    (≈ 2× a step). At g = 0 the norm form's
    gradient is taken as 0 (the squared norm is clamped at the smallest normal float).
    """

    name = "grad_norm_penalty"
    group = "sharpness"
    source = ("Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques (IGNITE, 2024); "
              "Stochastic Training is Not Necessary for Generalization (Geiping et al., 2022)")
    params = (
        Param("lambda", float, 0.01, 0.0, 1.0, live=True, log=True, help="strength λ of the gradient-norm term"),
        Param("form", str, "norm", choices=("norm", "squared"), help="norm: λ‖∇L‖; squared: λ‖∇L‖²"),
    )

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        lam = self["lambda"]
        if lam == 0.0:
            return None
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        return grad_norm_penalty(ctx.data_loss, params, lam, self["form"])
