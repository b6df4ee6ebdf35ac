"""UDA: KL consistency from a sharpened, confidence-masked target on the clean input to a noisy view."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.regularizers._ssl import SSL_TECHNIQUES, SSLRegularizer, gaussian_view
from engine.regularizers.base import LossContext, Param, register


def sharpened_target(logits: Tensor, temperature: float) -> Tensor:
    """softmax(z/T): the UDA target (T < 1 sharpens)."""
    return torch.softmax(logits / temperature, dim=1)


def uda_loss(target_logits: Tensor, student_logits: Tensor, temperature: float, beta: float,
             ) -> tuple[Tensor, Tensor, Tensor]:
    """(1/|U|)·Σ_u 1[max softmax(z_u) ≥ β]·KL(softmax(z_u/T) ‖ softmax(s_u)).

    The mask uses the *unsharpened* confidence. Returns (loss, mask, pseudo-labels).
    """
    confidence, pseudo = torch.softmax(target_logits, dim=1).max(dim=1)
    mask = confidence >= beta
    log_q = torch.log_softmax(target_logits / temperature, dim=1)
    log_p = torch.log_softmax(student_logits, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    return (mask.to(kl.dtype) * kl).sum() / len(kl), mask, pseudo


@register
class UDA(SSLRegularizer):
    """Add w(t)·(1/|U|) Σ_u 1[max p(u) ≥ β]·KL(sharpen(p(u), T) ‖ p(noisy(u))) on unlabelled rows.

    *Unsupervised Data Augmentation for Consistency Training* (Xie et al., NeurIPS 2020),
    techniques §9 Extended (verify the defaults against the paper: T = 0.4, β = 0.8). Conventions:

    * Target: softmax(f(u)/T) on the *clean* unlabelled input, under ``no_grad``; the mask uses the
      unsharpened confidence max softmax(f(u)) ≥ β (β = 0: every row).
    * Student: f(u + σε) with Gaussian noise (σ 0.4) from the technique's generator, in place of
      the paper's RandAugment / back-translation.
    * Normalisation: the masked KL is summed and divided by the number of unlabelled rows (as
      fixmatch). Weight λ_u with the shared §9 ramp (``ramp`` 0 = the paper's constant weight).
    * Not implemented: training-signal annealing (TSA), which masks confident *labelled* rows out
      of the supervised loss; that loss is the trainer's, not this technique's.
    * Metrics as fixmatch (``ssl/mask_rate``, ``ssl/pseudo_acc``, …, pseudo-label = argmax target).
    """

    name = "uda"
    source = "Unsupervised Data Augmentation for Consistency Training (Xie et al., 2020)"
    conflicts = SSL_TECHNIQUES
    weight_param = "lambda_u"
    params = (
        Param("temperature", float, 0.4, 0.05, 1.0, live=True, help="sharpening temperature T of the target"),
        Param("beta", float, 0.8, 0.0, 0.999, live=True, help="confidence threshold β of the mask (0 = none)"),
        Param("lambda_u", float, 1.0, 0.0, 10.0, live=True, help="unlabelled-loss weight λ_u after the ramp-up"),
        Param("ramp", float, 0.0, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("sigma", float, 0.4, 0.0, 2.0, live=True, help="std of the Gaussian noise of the student's view"),
    )

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        with torch.no_grad():
            target_logits = ctx.model(u)
        student_logits = ctx.model(gaussian_view(u, self["sigma"], self.generator))
        loss, mask, pseudo = uda_loss(target_logits, student_logits, self["temperature"], self["beta"])
        self.tally(ctx, rows, pseudo, mask)
        return loss
