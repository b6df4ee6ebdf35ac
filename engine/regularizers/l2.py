"""Coupled L2 penalty in the loss."""

from __future__ import annotations

from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, register, weight_matrices


@register
class L2(Regularizer):
    """Add (λ/2)·Σ‖W‖² to the loss, so every weight's gradient gains λW (coupled L2).

    Classical penalty; contrasted with decoupled decay in *Decoupled Weight Decay Regularization*
    (Loshchilov & Hutter, 2019). Convention: the ½ is included, so the gradient is exactly λW.
    Only weight matrices/kernels (dim ≥ 2) are covered unless ``include_bias``; biases and norm
    gains carry no scale that the penalty should shrink. Because it sits in the loss, the
    Hessian of the total objective shifts by λI (sharpness panels say whether penalties count),
    and under Adam the penalty's gradient is divided by √v̂ — use ``weight_decay`` for AdamW's
    behaviour.
    """

    name = "l2"
    group = "norm"
    source = "Decoupled Weight Decay Regularization (Loshchilov & Hutter, 2019); classical L2 penalty"
    params = (
        Param("lambda", float, 5e-4, 0.0, 0.1, live=True, log=True, help="strength λ of (λ/2)Σ‖W‖²"),
        Param("include_bias", bool, False, help="also penalise biases and other 1-D parameters"),
    )

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        weights = list(weight_matrices(ctx.model, self["include_bias"]))
        if not weights:
            return None
        total = sum(w.pow(2).sum() for w in weights)
        return 0.5 * self["lambda"] * total

    def hessian_shift(self, params: dict[str, Tensor]) -> dict[str, float]:
        """+λ on the diagonal of every parameter the penalty covers (the same rule as ``extra_loss``)."""
        lam = float(self["lambda"])
        return {name: lam for name, p in params.items() if p.dim() >= 2 or self["include_bias"]}
