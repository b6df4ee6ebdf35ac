"""Mean teacher: agree with an exponential-moving-average copy of the model on unlabelled data."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from engine.regularizers._common import elapsed_steps
from engine.regularizers._ssl import EmaTeacher, SSLRegularizer, gaussian_view, squared_distance
from engine.regularizers.base import LossContext, Param, Setup, register


@register
class MeanTeacher(SSLRegularizer):
    """Add w(t)·mean_u ‖softmax f_θ(view(u)) − softmax f_θ′(view′(u))‖², θ′ an EMA of the weights (no gradient).

    *Mean teachers are better role models: Weight-averaged consistency targets improve
    semi-supervised deep learning results* (Tarvainen & Valpola, NeurIPS 2017).
    Conventions:

    * Teacher: ``copy.deepcopy`` of the model at build time (θ′₀ = θ₀) with ``requires_grad``
      off; it never receives gradients. After every optimizer step (``after_step``)
      θ′ ← α_t·θ′ + (1 − α_t)·θ and buffers (BN statistics) are copied, with the reference
      code's warm-up α_t = min(1 − 1/(t + 1), α), t the 1-based update number, so early on the
      teacher is the running average of all iterates. The paper's schedule, α = 0.99 during the
      ramp-up and 0.999 after, is ``alpha`` → ``alpha_late`` once t ≥ ``switch``·T updates are
      done (t counted from 0, as the ramp); the default ``switch`` = 1 never switches, because
      on the lab's 400-step two-moons runs a 0.999 teacher (horizon ≈ 1000 updates) would barely
      move from its initialisation. Set ``switch`` = ``ramp`` for the paper's schedule.
    * Views: student and teacher see independent Gaussian views u + σε, u + σε′ (technique's
      own generator). The teacher runs under ``no_grad`` in the student's mode (train, so
      dropout, if any, is noise for both, as in the paper) with the student's dropout p.
    * Distance: squared Euclidean distance between softmaxes, summed over classes, averaged over
      the batch's unlabelled rows. Weight: the shared SSL ramp to w_max (a coefficient of 1 is
      weak on two moons; 10–30 is the suggested range, not yet calibrated).
    * Metrics: ``ssl/pseudo_acc`` = accuracy of the teacher's argmax on its view against the
      hidden labels (the teacher's accuracy on the unlabelled pool); ``ssl/mask_rate`` = 1;
      ``ssl/disagree`` = student–teacher disagreement rate; ``ssl/weight`` = w(t).
    """

    name = "mean_teacher"
    source = ("Mean teachers are better role models: Weight-averaged consistency targets improve "
              "semi-supervised deep learning results (Tarvainen & Valpola, 2017)")
    params = (
        Param("alpha", float, 0.99, 0.9, 0.9999, live=True, log=True, help="EMA decay α of the teacher's weights"),
        Param("alpha_late", float, 0.999, 0.9, 0.9999, live=True, log=True,
              help="EMA decay after the switch (the paper: 0.999 after the ramp-up)"),
        Param("switch", float, 1.0, 0.0, 1.0,
              help="fraction of the run after which α becomes alpha_late (paper: = ramp; 1 = never)"),
        Param("w_max", float, 1.0, 0.0, 100.0, live=True, help="consistency weight after the ramp-up"),
        Param("ramp", float, 0.3, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("sigma", float, 0.1, 0.0, 1.0, live=True, help="std σ of the Gaussian input noise of each view"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.teacher = EmaTeacher(setup.model)

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        sigma = self["sigma"]
        p_student = ctx.model(gaussian_view(u, sigma, self.generator)).softmax(dim=1)
        p_teacher = self.teacher(gaussian_view(u, sigma, self.generator)).softmax(dim=1)
        target = p_teacher.argmax(dim=1)
        self.tally(ctx, rows, target, disagree=p_student.detach().argmax(dim=1) != target)
        return squared_distance(p_student, p_teacher)

    def alpha_at(self, step: int) -> float:
        """α for update ``step`` (1-based): ``alpha`` before the switch, ``alpha_late`` from it on."""
        late = elapsed_steps(step) >= self["switch"] * self.setup.total_steps
        return self["alpha_late"] if late else self["alpha"]

    def after_step(self, step: int) -> None:
        self.teacher.update(EmaTeacher.warmed_alpha(self.alpha_at(step), step))
