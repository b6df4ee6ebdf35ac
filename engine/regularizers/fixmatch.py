"""FixMatch-style pseudo-labels: confident predictions on a weak view supervise a strong view."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers._ssl import SSLRegularizer, gaussian_view
from engine.regularizers.base import Batch, LossContext, Param, Setup, register


@register
class FixMatch(SSLRegularizer):
    """Add w(t)·(1/|U|) Σ_u 1[max q_u ≥ τ]·CE(f(strong(u)), argmax q_u), q = softmax f(weak(u)) detached.

    *FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence* (Sohn et al.,
    NeurIPS 2020), with Gaussian views in place of image augmentation. Conventions:

    * Weak view u + σ_w·ε (σ_w 0.1), strong view u + σ_s·ε′ (σ_s 0.4 on two moons), independent
      draws from the technique's own generator. q is computed under ``no_grad`` (it is a target).
    * Normalisation: the masked CE is summed and divided by the number of unlabelled rows in the
      batch, *not* by the number that pass the mask, so the term grows as the mask fills.
    * Batch composition μ (mini-batch runs only): the paper samples B labelled and μB unlabelled
      examples per step (μ = 7). Here each trainer mini-batch of n rows is recomposed to hold
      exactly B = max(1, round(n/(1 + μ))) labelled rows: missing labelled rows replace the first
      unlabelled ones, surplus labelled rows are replaced by unlabelled ones, the picks drawn
      uniformly with replacement from the labelled / unlabelled pool by the technique's
      generator (the paper's unlabelled stream also holds the labelled images; here it does
      not). μ = 0 keeps the trainer's batch as drawn; a full batch (two moons) is never changed.
    * Weight: λ_u with the shared SSL ramp (``ramp`` = 0 gives the paper's constant λ_u).
    * Metrics: ``ssl/mask_rate`` = mean(mask) over the unlabelled rows; ``ssl/pseudo_acc`` =
      accuracy of the *used* (masked) pseudo-labels against the hidden labels, absent when none
      pass; ``ssl/pseudo_acc_all`` = over all unlabelled rows; ``ssl/weight`` = w(t).

    Exact check: τ = 1 keeps every row out of the mask unless the softmax saturates, so L_u = 0.
    """

    name = "fixmatch"
    source = "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence (Sohn et al., 2020)"
    weight_param = "lambda_u"
    order = 5  # recompose the batch (μ) after min_labeled (0), before input noise (10) perturbs it
    params = (
        Param("tau", float, 0.95, 0.5, 0.999, live=True, help="confidence threshold τ for using a pseudo-label"),
        Param("lambda_u", float, 1.0, 0.0, 10.0, live=True, help="unlabelled-loss weight λ_u after the ramp-up"),
        Param("ramp", float, 0.3, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none)"),
        Param("weak_sigma", float, 0.1, 0.0, 1.0, live=True, help="std of the Gaussian noise of the weak view"),
        Param("strong_sigma", float, 0.4, 0.0, 2.0, live=True, help="std of the Gaussian noise of the strong view"),
        Param("mu", float, 7.0, 0.0, 64.0, live=True,
              help="unlabelled rows per labelled row in each mini-batch (0 = as drawn; full batch: ignored)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        labeled = setup.dataset.labeled.cpu().bool()
        self.pools = (torch.nonzero(~labeled, as_tuple=True)[0], torch.nonzero(labeled, as_tuple=True)[0])

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        if not self["mu"] or batch.labeled is None or len(batch.idx) >= self.setup.dataset.n_train:
            return batch
        target = max(1, round(len(batch.idx) / (1.0 + self["mu"])))
        surplus = int(batch.labeled.sum()) - target
        if surplus == 0:
            return batch
        swap_out = batch.labeled if surplus > 0 else ~batch.labeled  # rows of the over-represented kind
        rows = torch.nonzero(swap_out, as_tuple=True)[0][:abs(surplus)]
        pool = self.pools[0] if surplus > 0 else self.pools[1]
        picks = pool[torch.randint(len(pool), (len(rows),), generator=self.generator)].to(batch.idx.device)
        idx, x, y, labeled = batch.idx.clone(), batch.x.clone(), batch.y.clone(), batch.labeled.clone()
        data = self.setup.dataset
        idx[rows], labeled[rows] = picks, surplus < 0
        x[rows], y[rows] = data.x_train[picks], data.y_train[picks]
        # y_soft is still None here: soft targets come later (transform_targets), and input mixing
        # is refused in few-label runs
        return Batch(x, y, idx, batch.y_soft, labeled)

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        with torch.no_grad():
            q = ctx.model(gaussian_view(u, self["weak_sigma"], self.generator)).softmax(dim=1)
        confidence, pseudo = q.max(dim=1)
        mask = confidence >= self["tau"]
        log_p = ctx.model(gaussian_view(u, self["strong_sigma"], self.generator)).log_softmax(dim=1)
        ce = -log_p.gather(1, pseudo.unsqueeze(1)).squeeze(1)
        self.tally(ctx, rows, pseudo, mask)
        return (mask.to(ce.dtype) * ce).sum() / len(rows)
