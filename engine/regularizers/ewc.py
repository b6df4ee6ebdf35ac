"""Elastic weight consolidation: a Fisher-weighted pull toward anchor weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register

CHUNK = 64  # examples per vmap call when estimating the Fisher


def empirical_fisher(model: nn.Module, names: list[str], x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Diagonal empirical Fisher F_i = mean_n (∂ log p(y_n | x_n) / ∂θ_i)² at the model's current θ.

    Per-example gradients via ``torch.func`` (vmap of grad), model in eval mode (no dropout).
    """
    params = {k: v.detach() for k, v in model.named_parameters() if k in names}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def nll(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return -torch.log_softmax(out, dim=-1)[0].gather(0, yi.reshape(1)).squeeze(0)

    per_example = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for start in range(0, len(x), CHUNK):
            grads = per_example(params, x[start:start + CHUNK], y[start:start + CHUNK])
            for k, g in grads.items():
                fisher[k] += g.pow(2).sum(dim=0)
    finally:
        for m, training in modes:
            m.training = training
    return {k: f / len(x) for k, f in fisher.items()}


def ewc_penalty(params: list[Tensor], anchors: list[Tensor], fishers: list[Tensor], lam: float) -> Tensor:
    """λ·Σ_i F_i(θ_i − θ*_i)² (no ½): gradient 2λF(θ − θ*)."""
    return lam * sum(((p - a).pow(2) * f).sum() for p, a, f in zip(params, anchors, fishers, strict=True))


@register
class EWC(Regularizer):
    """Add λ·Σ_i F_i(θ_i − θ*_i)²: a diagonal-Fisher-weighted pull toward anchor weights θ*.

    *Overcoming catastrophic forgetting in neural networks* (Kirkpatrick et al., PNAS 2017)
    (extended). No ½ (as l2_init), so the gradient is 2λF(θ − θ*).

    This engine has no task boundaries, so (lab convention, not the paper's multi-task setting):

    * Anchor θ* = the weights when the technique is built (the run's initialisation), all
      trainable parameters, biases included.
    * F = the diagonal *empirical* Fisher at θ*: mean over examples of the squared per-example
      gradient of −log p(y | x), on ``fisher_samples`` labelled training examples drawn (without
      replacement) from the technique's generator, in eval mode. It is computed once at build time
      rather than from the trainer's first batches, so it is exactly at θ* and does not depend on
      the batch size; cost ≈ fisher_samples per-example gradients.
    * ``every`` > 0: after every ``every``-th update θ* ← θ and F is re-estimated there (on the
      same examples), a rolling anchor; 0 keeps the initial anchor for the whole run.
    """

    name = "ewc"
    group = "continual"
    source = "Overcoming catastrophic forgetting in neural networks (Kirkpatrick et al., 2017)"
    tasks = ("classification",)
    params = (
        Param("lambda", float, 1.0, 1e-3, 1e4, live=True, log=True, help="strength λ of λΣF(θ − θ*)²"),
        Param("fisher_samples", int, 256, 8, 8192, log=True, help="labelled examples used to estimate the Fisher"),
        Param("every", int, 0, 0, 100000, help="re-anchor θ* and re-estimate F every this many updates (0 = never)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        data = setup.dataset
        x = data.x_train
        pool = torch.arange(len(x), device=x.device)
        labeled = getattr(data, "labeled", None)
        if labeled is not None:
            pool = labeled.bool().nonzero(as_tuple=True)[0]
        order = torch.randperm(len(pool), generator=self.generator)[: self["fisher_samples"]]
        self.sample = pool[order.to(pool.device)]
        self.names = [k for k, p in setup.model.named_parameters() if p.requires_grad]
        self._tensors = [p for p in setup.model.parameters() if p.requires_grad]
        self.anchors: list[Tensor] = []
        self.fishers: list[Tensor] = []
        self.reanchor()

    def reanchor(self) -> None:
        """θ* ← θ; F ← the empirical Fisher at θ* on the stored sample."""
        data, model = self.setup.dataset, self.setup.model
        fisher = empirical_fisher(model, self.names, data.x_train[self.sample], data.y_train[self.sample].long())
        self.anchors = [p.detach().clone() for p in self._tensors]
        self.fishers = [fisher[k] for k in self.names]

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if not self._tensors:
            return None
        return ewc_penalty(self._tensors, self.anchors, self.fishers, self["lambda"])

    def after_step(self, step: int) -> None:
        if self["every"] and step % self["every"] == 0:
            self.reanchor()
