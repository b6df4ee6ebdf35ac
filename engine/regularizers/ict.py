"""Interpolation consistency: predictions at a mix of two unlabelled points match the mixed teacher predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.regularizers._ssl import EmaTeacher, SSLRegularizer, gaussian_view, squared_distance
from engine.regularizers.base import LossContext, Param, Setup, register


@register
class ICT(SSLRegularizer):
    """Add w(t)·‖p_θ(mix_λ(u_j, u_k)) − mix_λ(p_θ′(u_j), p_θ′(u_k))‖², θ′ an EMA teacher: be linear between points.

    Here p = softmax f and mix_λ(a, b) = λa + (1 − λ)b; the mean runs over unlabelled rows j.

    *Interpolation Consistency Training for Semi-Supervised Learning* (Verma et al., IJCAI 2019),
    Conventions, following the reference code:

    * One λ ~ Beta(α, α) per batch; k = π(j) for a random permutation π of the batch's unlabelled
      rows. π comes from the technique's torch generator; λ from a NumPy generator seeded with
      that generator's initial seed (torch's Beta sampler takes no generator), as in mixup.
    * View: u is first perturbed once, u + σε (technique's generator); the teacher sees the
      perturbed u_j, u_k and the student their mix, so with σ = 0 and λ = 1 the term is the
      student–teacher agreement on the same input.
    * Teacher: an EMA copy (``copy.deepcopy`` at build, ``requires_grad`` off, forward under
      ``no_grad`` in the student's mode); after every optimizer step θ′ ← α_t·θ′ + (1 − α_t)·θ,
      α_t = min(1 − 1/(t + 1), ema) (reference warm-up), buffers copied.
    * Distance: squared Euclidean between softmaxes, summed over classes, averaged over the
      unlabelled rows. Weight: the shared SSL ramp to w_max. Not yet calibrated on two moons.
    * Metrics: ``ssl/pseudo_acc`` = accuracy of the teacher's argmax on the (unmixed) unlabelled
      rows against the hidden labels; ``ssl/mask_rate`` = 1; ``ssl/weight`` = w(t).
    """

    name = "ict"
    source = "Interpolation Consistency Training for Semi-Supervised Learning (Verma et al., 2019)"
    params = (
        Param("alpha", float, 1.0, 0.1, 2.0, live=True, help="Beta(α, α) concentration of the mixing weight λ"),
        Param("w_max", float, 1.0, 0.0, 100.0, live=True, help="consistency weight after the ramp-up"),
        Param("ema", float, 0.999, 0.9, 0.9999, live=True, log=True, help="EMA decay of the teacher's weights"),
        Param("ramp", float, 0.3, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("sigma", float, 0.1, 0.0, 1.0, live=True, help="std σ of the Gaussian input noise of the view"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.teacher = EmaTeacher(setup.model)
        self._rng = np.random.default_rng(self.generator.initial_seed())
        self.last_lam: float | None = None  # λ and π of the latest batch, for tests
        self.last_perm: Tensor | None = None

    def draw_lambda(self) -> float:
        """One λ ~ Beta(α, α) for the batch."""
        return float(self._rng.beta(self["alpha"], self["alpha"]))

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        lam = self.draw_lambda()
        perm = torch.randperm(len(rows), generator=self.generator).to(u.device)
        self.last_lam, self.last_perm = lam, perm
        u = gaussian_view(u, self["sigma"], self.generator)
        p_teacher = self.teacher(u).softmax(dim=1)
        target = lam * p_teacher + (1.0 - lam) * p_teacher[perm]
        p_student = ctx.model(lam * u + (1.0 - lam) * u[perm]).softmax(dim=1)
        self.tally(ctx, rows, p_teacher.argmax(dim=1))
        return squared_distance(p_student, target)

    def after_step(self, step: int) -> None:
        self.teacher.update(EmaTeacher.warmed_alpha(self["ema"], step))
