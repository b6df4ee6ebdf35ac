"""Logit z-loss (PaLM / ST-MoE): penalise the squared log-partition log Σ exp z."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register


def logit_z_penalty(logits: Tensor, lambda_z: float) -> Tensor:
    """λ_z·mean_b (log Σ_j exp z_bj)²; its gradient w.r.t. z_b is 2λ_z·log Z_b·softmax(z_b)/B."""
    return lambda_z * torch.logsumexp(logits, dim=-1).pow(2).mean()


@register
class LogitZLoss(Regularizer):
    """Add λ_z·mean (log Σ exp z)² to keep the log-partition near 0 (logit z-loss, not the spherical Z-loss).

    *PaLM: Scaling Language Modeling with Pathways* (Chowdhery et al., 2022) and the router
    z-loss of *ST-MoE* (Zoph et al., 2022). Not to be confused with the
    shift/scale-invariant spherical Z-loss (``loss.name=z_spherical``):

        L + λ_z·mean_b (log Σ_j exp z_bj)²

    Uses the raw model outputs z (never the StableMax probabilities). Cross-entropy is
    unchanged by a shift z + c·1 while this penalty is not, so it pins the free shift of the
    logits and keeps softmax numerically tame. Metric: ``logits/log_z`` (batch mean of log Z at
    the latest step).
    """

    name = "logit_z_loss"
    group = "loss-scale"
    source = ("PaLM: Scaling Language Modeling with Pathways (Chowdhery et al., 2022); "
              "ST-MoE: Designing Stable and Transferable Sparse Expert Models (Zoph et al., 2022)")
    tasks = ("classification",)
    params = (
        Param("lambda_z", float, 1e-4, 0.0, 0.1, live=True, log=True,
              help="strength λ_z of the squared log-partition penalty (ST-MoE router: 1e-3)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.last_log_z = float("nan")

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        log_z = torch.logsumexp(ctx.logits, dim=-1)
        self.last_log_z = float(log_z.detach().mean())
        return self["lambda_z"] * log_z.pow(2).mean()

    def metrics(self) -> dict[str, float]:
        return {"logits/log_z": self.last_log_z}
