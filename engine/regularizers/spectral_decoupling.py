"""Spectral decoupling: an L2 penalty on the logits, not on the weights."""

from __future__ import annotations

from torch import Tensor

from engine.regularizers.base import LossContext, Param, Regularizer, register


def spectral_decoupling_penalty(logits: Tensor, lam: float) -> Tensor:
    """(λ/2)·mean_b ‖z_b‖²; its gradient w.r.t. z_b is λ·z_b/B."""
    return 0.5 * lam * logits.pow(2).sum(dim=-1).mean()


@register
class SpectralDecoupling(Regularizer):
    """Add (λ/2)·mean ‖z‖² on the logits, bounding them so weaker predictive features still get learned.

    *Gradient Starvation: A Learning Proclivity in Neural Networks* (Pezeshki et al., NeurIPS
    2021):

        L + (λ/2)·mean_b ‖z_b‖²     (squared norm over classes, mean over the batch)

    Cross-entropy alone keeps growing the logits of already-separated examples along the
    dominant feature, which starves the gradient of every other feature; penalising the logits
    (not the weights) decouples the features' dynamics. Uses the raw model outputs z. Not to be
    confused with spectral regularization of weight singular values (``spectral``).
    """

    name = "spectral_decoupling"
    group = "norm"
    source = "Gradient Starvation: A Learning Proclivity in Neural Networks (Pezeshki et al., 2021)"
    tasks = ("classification",)
    params = (
        Param("lambda", float, 1e-2, 1e-4, 1.0, live=True, log=True, help="strength λ of the logit penalty"),
    )

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        return spectral_decoupling_penalty(ctx.logits, self["lambda"])
