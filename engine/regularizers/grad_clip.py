"""Gradient-norm clipping (global or per tensor)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.regularizers.base import Param, Regularizer, register


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@register
class GradClip(Regularizer):
    """Rescale the gradient to norm ≤ c (direction unchanged) to cut spikes and divergence.

    *On the difficulty of training Recurrent Neural Networks* (Pascanu et al., 2013); the
    per-tensor (component-wise) option from *Improving Stability of Fine-Tuning … Component-Wise
    Gradient Norm Clipping*. ``global``: g ← g·min(1, c/(‖g‖ + 1e-6)) with the norm over all
    parameters (torch's ``clip_grad_norm_`` rule); ``per_tensor``: the same rule for each tensor
    alone. Runs after ⊥Grad and before gradient noise (order 10), so noise is never clipped.
    Gradients that are already within the bound are left bit-for-bit untouched.

    Metrics: ``grad/clipped_frac`` (1/0 in global mode; fraction of tensors clipped in
    per_tensor mode) and ``grad/norm_clipped``, the global norm after clipping.
    """

    name = "grad_clip"
    group = "optimizer"
    source = "On the difficulty of training Recurrent Neural Networks (Pascanu et al., 2013)"
    order = 10
    params = (
        Param("c", float, 1.0, 0.01, 100.0, live=True, log=True, help="maximum gradient norm"),
        Param("mode", str, "global", choices=("global", "per_tensor"),
              help="global: one norm over all parameters; per_tensor: clip each tensor alone"),
    )

    def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return {"grad/clipped_frac": 0.0, "grad/norm_clipped": 0.0}
        groups = [grads] if self["mode"] == "global" else [[g] for g in grads]
        clipped = sum(self._clip(group) for group in groups)
        return {"grad/clipped_frac": clipped / len(groups), "grad/norm_clipped": float(_norm(grads))}

    def _clip(self, grads: list[Tensor]) -> bool:
        with torch.no_grad():
            factor = self["c"] / (float(_norm(grads)) + 1e-6)
            if factor >= 1.0:
                return False
            for g in grads:
                g.mul_(factor)
            return True
