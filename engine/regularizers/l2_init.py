"""L2 penalty toward the initial weights (regenerative regularization)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register


@register
class L2Init(Regularizer):
    """Pull every parameter back toward its initial value with λ·‖θ − θ₀‖² (keeps plasticity).

    *Maintaining Plasticity in Continual Learning via Regenerative Regularization* (Kumar et al.,
    2023). Convention (as in the paper): there is **no ½**, so the gradient is
    2λ(θ − θ₀) and the paper's λ values carry over. θ₀ is a copy of *all* trainable parameters
    (biases included) taken when the technique is built, i.e. the run's initialization — not
    the start of the current task.
    """

    name = "l2_init"
    group = "continual"
    source = "Maintaining Plasticity in Continual Learning via Regenerative Regularization (Kumar et al., 2023)"
    params = (
        Param("lambda", float, 1e-3, 1e-5, 0.1, live=True, log=True, help="strength λ of λ‖θ − θ₀‖²"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self._pairs = [(p, p.detach().clone()) for p in setup.model.parameters() if p.requires_grad]

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if not self._pairs:
            return None
        return self["lambda"] * sum((p - p0).pow(2).sum() for p, p0 in self._pairs)
