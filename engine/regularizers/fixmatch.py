"""FixMatch-style pseudo-labels: confident predictions on a weak view supervise a strong view."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.regularizers._ssl import SSLRegularizer, gaussian_view, other_ssl
from engine.regularizers.base import LossContext, Param, register


@register
class FixMatch(SSLRegularizer):
    """Add w(t)·(1/|U|) Σ_u 1[max q_u ≥ τ]·CE(f(strong(u)), argmax q_u), q = softmax f(weak(u)) detached.

    *FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence* (Sohn et al.,
    NeurIPS 2020), techniques §9.3, with Gaussian views in place of image augmentation. Conventions:

    * Weak view u + σ_w·ε (σ_w 0.1), strong view u + σ_s·ε′ (σ_s 0.4 on two moons), independent
      draws from the technique's own generator. q is computed under ``no_grad`` (it is a target).
    * Normalisation: the masked CE is summed and divided by the number of unlabelled rows in the
      batch, *not* by the number that pass the mask, so the term grows as the mask fills.
    * Unlabelled rows are those of the trainer's batch (all of them under full batch, as on two
      moons); the paper's μ unlabelled-per-labelled sampling ratio is not implemented.
    * Weight: λ_u with the shared §9 ramp (``ramp`` = 0 gives the paper's constant λ_u).
    * Metrics: ``ssl/mask_rate`` = mean(mask) over the unlabelled rows; ``ssl/pseudo_acc`` =
      accuracy of the *used* (masked) pseudo-labels against the hidden labels, absent when none
      pass; ``ssl/pseudo_acc_all`` = over all unlabelled rows; ``ssl/weight`` = w(t).

    Exact check: τ = 1 keeps every row out of the mask unless the softmax saturates, so L_u = 0.
    """

    name = "fixmatch"
    source = "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence (Sohn et al., 2020)"
    conflicts = other_ssl("fixmatch")
    weight_param = "lambda_u"
    params = (
        Param("tau", float, 0.95, 0.5, 0.999, live=True, help="confidence threshold τ for using a pseudo-label"),
        Param("lambda_u", float, 1.0, 0.0, 10.0, live=True, help="unlabelled-loss weight λ_u after the ramp-up"),
        Param("ramp", float, 0.3, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("weak_sigma", float, 0.1, 0.0, 1.0, live=True, help="std of the Gaussian noise of the weak view"),
        Param("strong_sigma", float, 0.4, 0.0, 2.0, live=True, help="std of the Gaussian noise of the strong view"),
    )

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        with torch.no_grad():
            q = ctx.model(gaussian_view(u, self["weak_sigma"], self.generator)).softmax(dim=1)
        confidence, pseudo = q.max(dim=1)
        mask = confidence >= self["tau"]
        log_p = ctx.model(gaussian_view(u, self["strong_sigma"], self.generator)).log_softmax(dim=1)
        ce = -log_p.gather(1, pseudo.unsqueeze(1)).squeeze(1)
        self.tally(ctx, rows, pseudo, mask)
        return (mask.to(ce.dtype) * ce).sum() / len(rows)
