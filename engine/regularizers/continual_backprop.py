"""Continual backprop: keep re-initialising a small fraction of the least useful mature hidden units."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers._recycle import RECYCLABLE, capture_hook, check_recyclable, mlp_layers, recycle_units
from engine.regularizers.base import Param, Regularizer, Setup, register


def contribution(activation: Tensor, outgoing: Tensor) -> Tensor:
    """Instantaneous contribution utility of each unit: mean_batch|h_i|·Σ_k|w_ki| (w: next layer)."""
    return activation.abs().mean(0) * outgoing.abs().sum(0)


@register
class ContinualBackprop(Regularizer):
    """After every update, re-initialise the ρ-fraction of mature hidden units with the lowest contribution utility.

    *Loss of plasticity in deep continual learning* (Dohare et al., Nature 2024), Algorithm 1.
    Per hidden layer of the MLP, after each optimizer step:

    * ages a_i += 1; utility u_i ← η·u_i + (1 − η)·mean_batch|h_i|·Σ_k|w_ki|, h the activation
      of the latest training forward (before its dropout slot), w the next layer's weights;
    * c ← c + ρ·#{i : a_i > m}; while c ≥ 1 the int(c) eligible units of lowest utility are
      recycled and c loses that count.

    Recycling (shared with ReDo): incoming weights redrawn from PyTorch's default ``nn.Linear``
    init, incoming bias 0 (as the authors' code), outgoing weights 0, the optimizer's moments of
    those coordinates zeroed (the authors' AdamGnT), u_i = a_i = 0. Convention where versions
    differ: the utility is the plain Algorithm-1 running average, without the bias correction
    u/(1 − η^a) or the mean-corrected variant of the authors' earlier code. Verify the defaults
    against the paper (ρ 1e-4, m 100, η 0.99 were its permuted-MNIST values). Model mlp only.
    ``replaced`` counts the units recycled so far.
    """

    name = "continual_backprop"
    group = "continual"
    requires = (RECYCLABLE,)
    source = "Loss of plasticity in deep continual learning (Dohare et al., 2024)"
    params = (
        Param("rho", float, 1e-4, 0.0, 0.1, live=True, log=True,
              help="replacement rate ρ: units replaced per mature unit per update"),
        Param("maturity", int, 100, 0, 100000, live=True, log=True,
              help="maturity threshold m: a unit is replaceable once older than m updates"),
        Param("decay", float, 0.99, 0.0, 0.9999, live=True, help="decay η of the running utility"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_recyclable(cfg, cls.name)

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.layers, self.next_layers, acts = mlp_layers(setup.model, self.name)
        self.activity: list[Tensor | None] = [None] * len(self.layers)
        for i, act in enumerate(acts):
            act.register_forward_hook(capture_hook(self.activity, i))
        device = setup.model.out.weight.device
        self.utility = [torch.zeros(layer.out_features, device=device) for layer in self.layers]
        self.age = [torch.zeros(layer.out_features, dtype=torch.long, device=device) for layer in self.layers]
        self.to_replace = [0.0] * len(self.layers)
        self.optimizer: torch.optim.Optimizer | None = None
        self.replaced = 0

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        eta = self["decay"]
        for i, (layer, nxt) in enumerate(zip(self.layers, self.next_layers, strict=True)):
            activity = self.activity[i]
            if activity is None:
                continue
            self.age[i] += 1
            self.utility[i].mul_(eta).add_(contribution(activity, nxt.weight), alpha=1.0 - eta)
            eligible = (self.age[i] > self["maturity"]).nonzero().flatten()
            self.to_replace[i] += self["rho"] * len(eligible)
            count = min(int(self.to_replace[i]), len(eligible))
            if count < 1:
                continue
            self.to_replace[i] -= count
            units = eligible[torch.argsort(self.utility[i][eligible], stable=True)[:count]]
            recycle_units(layer, nxt, units, self.generator, self.optimizer, bias="zero")
            self.utility[i][units] = 0.0
            self.age[i][units] = 0
            self.replaced += count
