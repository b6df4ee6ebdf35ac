"""Cross pseudo supervision: two networks train on each other's hard predictions."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from engine.regularizers._ssl import SSLRegularizer, private_rng, unlabeled_rows
from engine.regularizers.base import LossContext, Param, Setup, register
from engine.regularizers.coteaching import follow_schedule, optimizer_like, peer_copy, per_sample_ce


def cross_term(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """CE(f_a, argmax f_b) + CE(f_b, argmax f_a), each a mean over rows; the pseudo-labels are
    hard argmaxes, so no gradient flows through them."""
    pseudo_a, pseudo_b = logits_a.detach().argmax(dim=1), logits_b.detach().argmax(dim=1)
    return F.cross_entropy(logits_a, pseudo_b) + F.cross_entropy(logits_b, pseudo_a)


@register
class CrossPseudoSupervision(SSLRegularizer):
    """Train a twin network; each learns from the other's hard pseudo-labels: λ·[CE(f₁, argmax f₂) + CE(f₂, argmax f₁)].

    *Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision* (Chen, Yuan, Zeng &
    Wang, CVPR 2021), adapted from pixels to examples:

        L = CE_sup(f₁) + CE_sup(f₂) + λ·[CE(f₁(x), argmax f₂(x)) + CE(f₂(x), argmax f₁(x))]

    f₁ is the run's model (every reported metric is f₁'s); f₂ a private peer of the same
    architecture with an independent initialisation (the co-teaching peer: f₁'s parameters
    permuted within each tensor with the technique's generator). The pseudo-labels are detached
    argmaxes, so f₁'s gradient comes from CE_sup(f₁) + λ·CE(f₁, ŷ₂) and f₂'s from
    CE_sup(f₂) + λ·CE(f₂, ŷ₁). λ = 1.5 is the paper's PASCAL VOC weight (6 on Cityscapes), checked
    against the authors' configs; the authors' code applies the cross term to the labelled and the
    unlabelled images alike (``labeled_too``, default on); off, it covers the unlabelled rows only.
    No ramp-up in the paper (``ramp`` 0). Pitfall: the paper's nets start from pretrained
    backbones; from scratch on two moons with 10 labels, λ = 6 locks both nets onto one class
    (test acc 0.59 / 0.64 on seeds 0 / 1, full batch, 400 steps) while λ = 1.5 gives 0.874 / 0.882.

    Mechanics: ``extra_loss`` runs f₂ on the batch (a forked global RNG seeded from the
    technique's generator, so f₁'s dropout masks are unchanged), f₁'s rows come from the trainer's
    own forward, and it returns CE_sup(f₂) + λ·cross — so the logged ``reg/cps`` and the total loss
    are the full CPS objective minus CE_sup(f₁). CE_sup(f₂) is plain softmax CE on the batch's
    current targets (soft when smoothed), a mean over the labelled rows. The backward fills f₂'s
    gradients; ``after_step`` steps f₂ with its own optimizer of f₁'s class and settings (lr and
    weight decay copied every step) and clears them. Under SAM only the first closure of a step
    trains f₂; gradient clipping/noise apply to f₁ only. Costs ≈ 2× a step.

    Metrics: ``ssl/pseudo_acc`` = accuracy of f₂'s pseudo-labels on the unlabelled rows (against
    the hidden labels), ``ssl/disagree`` = how often f₁ and f₂ disagree there, ``ssl/weight`` = λ(t).
    """

    name = "cps"
    source = "Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision (Chen et al., 2021)"
    weight_param = "lambda"
    params = (
        Param("lambda", float, 1.5, 0.0, 20.0, live=True,
              help="weight λ of the cross term (paper: 1.5 on VOC, 6 on Cityscapes)"),
        Param("ramp", float, 0.0, 0.0, 1.0, help="ramp-up length T_r as a fraction of the run (0 = none, the paper)"),
        Param("labeled_too", bool, True, help="apply the cross term to labelled rows too (the authors' code)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.peer = peer_copy(setup.model, self.generator)
        self.peer.train()
        self.peer_params = [p for p in self.peer.parameters() if p.requires_grad]
        self.optimizer: torch.optim.Optimizer | None = None
        self.peer_optimizer: torch.optim.Optimizer | None = None
        self._trained_step: int | None = None
        self.last_cross: Tensor | None = None  # the cross term of the latest batch (before λ), for tests

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.peer_optimizer = optimizer_like(optimizer, self.peer_params)

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        batch, self._pending = ctx.batch, None
        train_peer = ctx.step != self._trained_step  # SAM: only the first closure trains the peer
        self._trained_step = ctx.step
        with private_rng(self.generator, ctx.logits.device), torch.set_grad_enabled(train_peer):
            peer_logits = self.peer(batch.x)
        labeled = (torch.ones(len(batch.x), dtype=torch.bool, device=batch.x.device)
                   if batch.labeled is None else batch.labeled.bool())
        weight = labeled.to(peer_logits.dtype)
        supervised = (per_sample_ce(peer_logits, batch) * weight).sum() / weight.sum().clamp_min(1.0)
        rows = unlabeled_rows(batch)
        cover = torch.arange(len(batch.x), device=batch.x.device) if self["labeled_too"] else rows
        self._weight = self.weight(ctx.step)
        cross = cross_term(ctx.logits[cover], peer_logits[cover]) if len(cover) else supervised * 0.0
        self.last_cross = cross.detach()
        if len(rows):
            mine, theirs = ctx.logits[rows].detach().argmax(1), peer_logits[rows].detach().argmax(1)
            self.tally(ctx, rows, theirs, disagree=mine != theirs)
        return supervised + self._weight * cross

    def after_step(self, step: int) -> None:
        if self.peer_optimizer is None or self.optimizer is None or self.peer_params[0].grad is None:
            return
        follow_schedule(self.peer_optimizer, self.optimizer)
        self.peer_optimizer.step()
        self.peer_optimizer.zero_grad(set_to_none=True)
