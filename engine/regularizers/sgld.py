"""Stochastic gradient Langevin dynamics on top of plain SGD: prior gradient plus injected noise."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from engine.regularizers.base import Param, Regularizer, Setup, register


@register
class SGLD(Regularizer):
    """Turn plain SGD into Langevin sampling: add the Gaussian-prior gradient and N(0, ε) noise each step.

    *Bayesian Learning via Stochastic Gradient Langevin Dynamics* (Welling & Teh, 2011), as used
    in *The Universality Lens: Why Even Highly Over-Parametrized Models Learn Well* (Feder, Urbanke & Fogel, 2025):

        θ ← θ − (ε_t/2)·∇U + N(0, ε_t·I),    U = N·L_B + ‖θ‖²/(2σ_p²)

    with L_B the mini-batch mean data loss (N·L_B estimates the full-data negative
    log-likelihood; N = training examples, or labelled ones in a few-label run). The step size
    is tied to the run's lr: ε_t = 2η_t/N, so the data part of the update is exactly the SGD step
    −η_t·∇L_B, the prior acts as coupled weight decay η_t·θ/(N·σ_p²), and the injected noise has
    std √(2η_t/N) per coordinate — a schedule that decays η_t gives the decreasing step sizes of
    the paper. Implemented as gradient surgery for ``optim.name=sgd`` without momentum or weight
    decay (refused otherwise: momentum or Adam would rescale the noise):

        g ← g + θ/(N·σ_p²) − √(2/(η_t·N))·ξ,   ξ ~ N(0, I)

    Runs last in the after_backward chain (order 25, after clipping and gradient noise), so the
    Langevin noise is never clipped; noise comes from the technique's own generator. Over all
    trainable parameters. Metric: ``sgld/noise_std`` = √(2η_t/N), the per-coordinate std of the
    injected parameter noise.
    """

    name = "sgld"
    group = "optimizer"
    refuses = frozenset({"controls_lr"})  # its noise scale is tied to the scheduled lr
    source = ("Bayesian Learning via Stochastic Gradient Langevin Dynamics (Welling & Teh, 2011); "
              "The Universality Lens: Why Even Highly Over-Parametrized Models Learn Well "
              "(Feder, Urbanke & Fogel, 2025)")
    order = 25
    params = (
        Param("sigma_p", float, 1.0, 0.01, 100.0, log=True, help="std σ_p of the Gaussian prior on every parameter"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        optim = cfg.optim
        if optim.name != "sgd" or optim.momentum or optim.weight_decay:
            raise ValueError("regularizers.sgld: needs plain SGD (optim.name=sgd, optim.momentum=0, "
                             "optim.weight_decay=0; the prior is σ_p); momentum or adaptive steps would "
                             "rescale the Langevin noise")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        labeled = getattr(setup.dataset, "labeled", None)
        self.n = int(labeled.sum()) if labeled is not None else int(setup.dataset.n_train)

    def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
        lr = self.setup.lr()
        if lr <= 0.0:
            return {"sgld/noise_std": 0.0}
        decay = 1.0 / (self.n * self["sigma_p"] ** 2)
        grad_noise_std = math.sqrt(2.0 / (lr * self.n))
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                noise = torch.randn(p.grad.shape, generator=self.generator, dtype=p.grad.dtype)
                p.grad.add_(p, alpha=decay).add_(noise.to(p.grad.device), alpha=-grad_noise_std)
        return {"sgld/noise_std": math.sqrt(2.0 * lr / self.n)}
