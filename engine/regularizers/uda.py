"""UDA: KL consistency from a sharpened, confidence-masked target on the clean input to a noisy view."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from engine.regularizers._common import elapsed_steps, soft_targets
from engine.regularizers._ssl import SSLRegularizer, gaussian_view
from engine.regularizers.base import Batch, LossContext, Param, Setup, register


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


TSA_SCHEDULES: dict[str, Callable[[float], float]] = {
    "linear": lambda progress: progress,
    "log": lambda progress: 1.0 - math.exp(-5.0 * progress),
    "exp": lambda progress: math.exp(5.0 * (progress - 1.0)),
}


def tsa_threshold(schedule: str, progress: float, num_classes: int) -> float:
    """η_t = α(progress)·(1 − 1/K) + 1/K: from chance 1/K at the start to 1 (log: 1 − e⁻⁵(1 − 1/K)) at the end."""
    return TSA_SCHEDULES[schedule](progress) * (1.0 - 1.0 / num_classes) + 1.0 / num_classes


def tsa_loss(log_probs: Tensor, batch: Batch, threshold: float) -> tuple[Tensor, Tensor]:
    """Σ_i keep_i·CE_i / max(Σ_i keep_i, 1) over labelled rows, keep_i = 1[p_i(y_i) ≤ η].

    CE_i = −Σ_c y_c log p_c with the batch's soft targets where set, else −log p(y_i); the
    confidence is always that of the hard label y_i. Returns (loss, keep mask over all rows).
    """
    correct = log_probs.detach().gather(1, batch.y.view(-1, 1)).squeeze(1).exp()
    keep = correct <= threshold
    if batch.labeled is not None:
        keep = keep & batch.labeled.bool()
    per_example = -(soft_targets(batch, log_probs.shape[1]).to(log_probs.dtype) * log_probs).sum(1)
    weights = keep.to(per_example.dtype)
    return (weights * per_example).sum() / weights.sum().clamp_min(1.0), keep


@register
class UDA(SSLRegularizer):
    """Add w(t)·(1/|U|) Σ_u 1[max p(u) ≥ β]·KL(sharpen(p(u), T) ‖ p(noisy(u))) on unlabelled rows.

    *Unsupervised Data Augmentation for Consistency Training* (Xie et al., NeurIPS 2020)
    (extended; verify the defaults against the paper: T = 0.4, β = 0.8). Conventions:

    * Target: softmax(f(u)/T) on the *clean* unlabelled input, under ``no_grad``; the mask uses the
      unsharpened confidence max softmax(f(u)) ≥ β (β = 0: every row).
    * Student: f(u + σε) with Gaussian noise (σ 0.4) from the technique's generator, in place of
      the paper's RandAugment / back-translation.
    * Normalisation: the masked KL is summed and divided by the number of unlabelled rows (as
      fixmatch). Weight λ_u with the shared SSL ramp (``ramp`` 0 = the paper's constant weight).
    * Training-signal annealing (``tsa``, off by default as in the reference code): a labelled
      row whose correct-class probability exceeds η_t = α_t·(1 − 1/K) + 1/K is dropped from the
      supervised CE, with α_t = t/T (linear), 1 − e^{−5t/T} (log) or e^{5(t/T − 1)} (exp), t the
      completed updates; the kept rows' CE is averaged over max(#kept, 1), as in the reference
      code. The trainer's data loss stays as it is: this technique adds (annealed CE − data
      loss), so ``reg/uda`` includes that correction and ``train/loss`` is the unmasked CE.
      Needs ``loss.name=ce``. Logs ``ssl/tsa_threshold`` = η_t and ``ssl/tsa_kept`` = the kept
      fraction of labelled rows.
    * Metrics as fixmatch (``ssl/mask_rate``, ``ssl/pseudo_acc``, …, pseudo-label = argmax target).
    """

    name = "uda"
    source = "Unsupervised Data Augmentation for Consistency Training (Xie et al., 2020)"
    weight_param = "lambda_u"
    params = (
        Param("temperature", float, 0.4, 0.05, 1.0, live=True, help="sharpening temperature T of the target"),
        Param("beta", float, 0.8, 0.0, 0.999, live=True, help="confidence threshold β of the mask (0 = none)"),
        Param("lambda_u", float, 1.0, 0.0, 10.0, live=True, help="unlabelled-loss weight λ_u after the ramp-up"),
        Param("ramp", float, 0.0, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("sigma", float, 0.4, 0.0, 2.0, live=True, help="std of the Gaussian noise of the student's view"),
        Param("tsa", str, "none", choices=("none", "linear", "log", "exp"),
              help="training-signal annealing schedule of the supervised CE (none = off)"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        super().check_config(cfg)
        if cfg.regularizers.get("uda", {}).get("tsa", "none") != "none" and cfg.loss.name != "ce":
            raise ValueError(f"regularizers.uda.tsa: anneals the cross-entropy, not loss.name={cfg.loss.name}; "
                             "set loss.name=ce or regularizers.uda.tsa=none")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self._tsa: tuple[float, Tensor, Tensor] | None = None

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        term = super().extra_loss(ctx)
        self._tsa = None
        if self["tsa"] == "none" or ctx.log_probs is None:
            return term
        progress = elapsed_steps(ctx.step) / ctx.total_steps
        threshold = tsa_threshold(self["tsa"], progress, self.num_classes)
        annealed, keep = tsa_loss(ctx.log_probs, ctx.batch, threshold)
        labeled = ctx.batch.labeled.bool() if ctx.batch.labeled is not None else torch.ones_like(keep)
        self._tsa = (threshold, keep.sum(), labeled.sum())
        correction = annealed - ctx.data_loss
        return correction if term is None else term + correction

    def metrics(self) -> dict[str, float]:
        metrics = super().metrics()
        if self._tsa is not None:
            threshold, kept, labeled = self._tsa
            metrics["ssl/tsa_threshold"] = threshold
            metrics["ssl/tsa_kept"] = float(kept) / max(float(labeled), 1.0)
            self._tsa = None
        return metrics

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        with torch.no_grad():
            target_logits = ctx.model(u)
        student_logits = ctx.model(gaussian_view(u, self["sigma"], self.generator))
        loss, mask, pseudo = uda_loss(target_logits, student_logits, self["temperature"], self["beta"])
        self.tally(ctx, rows, pseudo, mask)
        return loss
