"""Early-learning regularization: hold predictions near their running early-learning targets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers._common import class_count
from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register

CLAMP = 1e-4


def elr_penalty(p: Tensor, t: Tensor, lam: float) -> Tensor:
    """λ·mean_b log(1 − ⟨t_b, p_b⟩); its gradient w.r.t. p_b is −λ·t_b / ((1 − ⟨t_b, p_b⟩)·B)."""
    return lam * torch.log(1.0 - (t * p).sum(dim=1)).mean()


@register
class ELR(Regularizer):
    """Add λ·mean log(1 − ⟨t,p⟩) to hold predictions near each sample's running early-learning target.

    *Early-Learning Regularization Prevents Memorization of Noisy Labels* (Liu et al., NeurIPS
    2020), following the authors' reference implementation exactly:

        p = softmax(z).clamp(1e-4, 1 − 1e-4);  q = p.detach() / p.detach().sum(1)
        t[i] ← β·t[i] + (1 − β)·q               (N×C buffer, zeros at start, by sample id)
        penalty = λ · mean_b log(1 − ⟨t[i_b], p_b⟩)

    The buffer is updated *before* the penalty is computed (as in the reference code), so after
    k visits row i sums to 1 − β^k. p comes from the run's output function (softmax, or
    StableMax when that replaces it). Sample ids come from ``batch.idx`` and must be stable
    across shuffles. Cannot be combined with mixup: the per-sample target of a mixed input is
    ill-defined.
    """

    name = "elr"
    group = "label"
    source = "Early-Learning Regularization Prevents Memorization of Noisy Labels (Liu et al., 2020)"
    tasks = ("classification",)
    refuses = frozenset({"mixes_rows"})  # its targets are per example (batch.idx)
    params = (
        Param("lambda", float, 3.0, 0.0, 10.0, live=True, help="strength λ of the ELR term (needs tuning)"),
        Param("beta", float, 0.7, 0.5, 0.999, help="momentum β of the per-sample target average (robust)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        n_train = int(setup.dataset.n_train)
        self.targets = torch.zeros(n_train, class_count(setup, self.name), device=setup.device)

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        probs = ctx.log_probs.exp() if ctx.log_probs is not None else ctx.logits.softmax(dim=1)
        p = probs.clamp(CLAMP, 1.0 - CLAMP)
        q = p.detach() / p.detach().sum(dim=1, keepdim=True)
        idx = ctx.batch.idx.to(self.targets.device)
        beta = self["beta"]
        with torch.no_grad():
            self.targets[idx] = beta * self.targets[idx] + (1.0 - beta) * q.to(self.targets.dtype)
        t = self.targets[idx].to(device=p.device, dtype=p.dtype)
        return elr_penalty(p, t, self["lambda"])
