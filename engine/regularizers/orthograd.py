"""⊥Grad: remove the gradient component along the weights (the logit-scaling direction)."""

from __future__ import annotations

import torch
from torch import nn

from engine.regularizers.base import Param, Regularizer, register

TINY = 1e-30


@register
class OrthoGrad(Regularizer):
    """Project each gradient orthogonal to its weights (same norm), so steps cannot just scale up the logits.

    *Grokking at the Edge of Numerical Stability* (Prieto et al., ICLR 2025), reference
    implementation, per parameter tensor w with gradient g:

        g⊥ = g − (⟨w, g⟩ / (⟨w, w⟩ + 1e-30))·w
        g⊥ ← g⊥ · ‖g‖ / (‖g⊥‖ + 1e-30)          (only when ``rescale``)

    ``scope = per_tensor`` is the reference implementation; ``global`` treats all parameters as
    one vector (which one the paper intends is unverified). Runs first in the after_backward
    chain (order 0), before clipping and noise. Tensors whose weights or gradient are exactly
    zero pass through unchanged (they have no radial component). The projection is computed in
    float64 and cast back, so orthogonality holds to ~1e-7 even for large float32 tensors.
    """

    name = "orthograd"
    group = "grokking"
    source = "Grokking at the Edge of Numerical Stability (Prieto et al., 2025)"
    order = 0
    params = (
        Param("scope", str, "per_tensor", choices=("per_tensor", "global"),
              help="project each tensor separately (reference) or all parameters as one vector"),
        Param("rescale", bool, True, help="rescale g⊥ to the original gradient norm"),
    )

    def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
        live = [p for p in params if p.grad is not None]
        groups = [live] if self["scope"] == "global" else [[p] for p in live]
        for group in groups:
            self._project(group)
        return {}

    def _project(self, group: list[nn.Parameter]) -> None:
        with torch.no_grad():
            ws = [p.detach().double() for p in group]
            gs = [p.grad.double() for p in group]
            ww = sum(torch.dot(w.flatten(), w.flatten()) for w in ws)
            gg = sum(torch.dot(g.flatten(), g.flatten()) for g in gs)
            if float(ww) == 0.0 or float(gg) == 0.0:
                return
            wg = sum(torch.dot(w.flatten(), g.flatten()) for w, g in zip(ws, gs, strict=True))
            coef = wg / (ww + TINY)
            g_perp = [g - coef * w for w, g in zip(ws, gs, strict=True)]
            if self["rescale"]:
                norm_perp = torch.sqrt(sum(torch.dot(g.flatten(), g.flatten()) for g in g_perp))
                scale = torch.sqrt(gg) / (norm_perp + TINY)
                g_perp = [g * scale for g in g_perp]
            for p, g in zip(group, g_perp, strict=True):
                p.grad.copy_(g)
