"""Naive pseudo-labelling: train on the model's own hard predictions for unlabelled data."""

from __future__ import annotations

from torch import Tensor

from engine.regularizers._ssl import SSLRegularizer
from engine.regularizers.base import LossContext, Param, register


@register
class PseudoLabel(SSLRegularizer):
    """Add w(t)·mean_u CE(f(u), argmax f(u).detach()): self-training on its own labels (confirmation-bias baseline).

    *Pseudo-Labeling and Confirmation Bias in Deep Semi-Supervised Learning* (Arazo et al., IJCNN
    2020) as its naive baseline; the idea is Lee's *Pseudo-Label* (2013).
    Conventions:

    * No threshold and no augmentation: f(u) is the trainer's own forward of the batch (the
      unlabelled rows of ``ctx.logits``, as trained on), so no extra forward is run. The target is
      the argmax of the *detached* prediction, so the gradient is plain CE towards the model's
      current guess.
    * CE on the softmax of the raw logits (whatever the run's output function), averaged over
      the batch's unlabelled rows. Weight: the shared SSL ramp to w_max.
    * Metrics: ``ssl/pseudo_acc`` = accuracy of the pseudo-labels against the hidden labels — a
      flat curve equal to the supervised model's accuracy is the confirmation-bias signature;
      ``ssl/mask_rate`` = 1; ``ssl/weight`` = w(t).
    """

    name = "pseudo_label"
    source = ("Pseudo-Labeling and Confirmation Bias in Deep Semi-Supervised Learning (Arazo et al., 2020); "
              "Pseudo-Label (Lee, 2013)")
    params = (
        Param("w_max", float, 1.0, 0.0, 100.0, live=True, help="pseudo-label loss weight after the ramp-up"),
        Param("ramp", float, 0.3, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
    )

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        log_p = ctx.logits[rows].log_softmax(dim=1)
        pseudo = log_p.detach().argmax(dim=1)
        self.tally(ctx, rows, pseudo)
        return -log_p.gather(1, pseudo.unsqueeze(1)).mean()
