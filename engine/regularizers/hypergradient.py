"""Hypergradient learning rate: adapt η online by the dot product of successive gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import Param, Regularizer, Setup, register


@register
class Hypergradient(Regularizer):
    """Adapt the learning rate online: η_t = η_{t−1} + β_h⟨g_t, g_{t−1}⟩ (grow while successive gradients agree).

    *FedHyper: A Universal and Robust Learning Rate Scheduler for Federated Learning with
    Hypergradient Descent* (Wang, Wang & Li, ICLR 2024), after *Online Learning Rate Adaptation with
    Hypergradient Descent* (Baydin et al., 2018):

        η_t = η_{t−1} + β_h·⟨g_t, g_{t−1}⟩      g_0 = 0, so η_1 = the run's lr

    g_t is the gradient the optimizer is about to use (this hook runs after clipping and noise,
    order 30), dotted over all trainable parameters. Lab conventions: the adaptation is kept as
    an offset δ_t = Σ β_h⟨g_s, g_{s−1}⟩ added to the run's scheduled lr, so η_t follows the
    formula exactly under a constant schedule while warm-up, decay and live ``optim.lr`` changes
    still act; η_t is floored at 0 (a negative lr would be gradient ascent). Wraps the optimizer
    step to write η_t into it (so it cannot be combined with SAM or co-teaching), and cannot be
    combined with SGLD, whose noise scale is tied to the scheduled lr. Works with any optimizer,
    always in this plain-gradient form (Baydin et al.'s Adam variant dots the gradient with the
    previous Adam update direction instead). Metric: ``hyper/lr`` = η_t.
    """

    name = "hypergradient"
    group = "optimizer"
    source = ("FedHyper: A Universal and Robust Learning Rate Scheduler for Federated Learning with Hypergradient "
              "Descent (Wang, Wang & Li, 2024); Online Learning Rate Adaptation with Hypergradient Descent "
              "(Baydin et al., 2018)")
    order = 30
    marks = frozenset({"controls_lr"})  # it overrides the scheduled lr (SGLD ties its noise to that lr)
    params = (
        Param("beta_h", float, 1e-3, 0.0, 0.1, live=True, log=True,
              help="hypergradient step β_h: how fast η follows ⟨g_t, g_{t−1}⟩"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.prev_grads: list[Tensor] | None = None
        self.offset = 0.0  # δ_t: accumulated β_h⟨g_s, g_{s−1}⟩
        self.last_lr = float("nan")

    def lr_now(self) -> float:
        """η_t: the run's scheduled lr plus the accumulated hypergradient offset, floored at 0."""
        return max(0.0, self.setup.lr() + self.offset)

    def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
        grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.prev_grads is not None:
            dot = sum((torch.sum(g * h) for g, h in zip(grads, self.prev_grads, strict=True)),
                      torch.zeros((), dtype=torch.float64))
            self.offset += self["beta_h"] * float(dot)
        self.prev_grads = [g.clone() for g in grads]
        self.last_lr = self.lr_now()
        return {"hyper/lr": self.last_lr}

    def step(self, closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
        loss = closure(True)
        lr = self.lr_now()
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        return loss
