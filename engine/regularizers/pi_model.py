"""Π-model: predictions on two independent noisy views of each unlabelled example should agree."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.regularizers._ssl import SSLRegularizer, gaussian_view, squared_distance
from engine.regularizers.base import LossContext, Param, register


@register
class PiModel(SSLRegularizer):
    """Add w(t)·mean_u ‖softmax f(view₁(u)) − softmax f(view₂(u))‖² so two noisy views of each unlabelled point agree.

    *Temporal Ensembling for Semi-Supervised Learning* (Laine & Aila, ICLR 2017), the Π-model of
    Conventions:

    * Views: u + σε₁ and u + σε₂ with independent ε from the technique's own generator (the
      input-noise operator of ``input_noise``; default σ 0.1, the shared weak view). The model is in train
      mode, so dropout (if any) adds a second, independent noise source per branch; its masks
      come from a forked global RNG seeded by the technique, never from the run's main stream.
    * Distance: squared Euclidean distance between the two softmax vectors, summed over classes
      and averaged over the batch's unlabelled rows (the calibration's MSE between softmaxes).
    * Gradients flow through *both* branches, as in the original (``detach`` = false). With
      ``detach`` = true the second branch is a fixed target (computed under ``no_grad``), the
      common variant.
    * Weight: w(t) = w_max·exp(−5(1 − t/T_r)²) for t < T_r = ramp·T, then w_max (the shared SSL ramp).
    * Metrics: ``ssl/pseudo_acc`` = accuracy of the second branch's argmax against the hidden
      labels; ``ssl/mask_rate`` = 1 (no threshold); ``ssl/disagree`` = fraction of unlabelled rows
      whose two branches pick different classes; ``ssl/weight`` = w(t).

    Exact check: with σ = 0 and no dropout both branches compute the same function of the same
    input, so L_u = 0 exactly.
    """

    name = "pi_model"
    source = "Temporal Ensembling for Semi-Supervised Learning (Laine & Aila, 2017)"
    params = (
        Param("w_max", float, 1.0, 0.0, 100.0, live=True, help="consistency weight after the ramp-up"),
        Param("ramp", float, 0.3, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("sigma", float, 0.1, 0.0, 1.0, live=True, help="std σ of the Gaussian input noise of each view"),
        Param("detach", bool, False, help="treat the second branch as a fixed target (no gradient through it)"),
    )

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        sigma = self["sigma"]
        p1 = ctx.model(gaussian_view(u, sigma, self.generator)).softmax(dim=1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self["detach"]):
            p2 = ctx.model(gaussian_view(u, sigma, self.generator)).softmax(dim=1)
        target = p2.detach().argmax(dim=1)
        self.tally(ctx, rows, target, disagree=p1.detach().argmax(dim=1) != target)
        return squared_distance(p1, p2)
