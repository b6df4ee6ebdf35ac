"""ReDo: periodically re-initialize dormant hidden units of an MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers._recycle import RECYCLABLE, capture_hook, check_recyclable, mlp_layers, recycle_units
from engine.regularizers.base import Param, Regularizer, Setup, register

_EPS = 1e-12


def dormant_scores(mean_abs: Tensor) -> Tensor:
    """s_i = E|h_i| / mean_k E|h_k| for one layer (all zeros when the whole layer is silent)."""
    return mean_abs / mean_abs.mean().clamp_min(_EPS)


@register
class ReDo(Regularizer):
    """Every `every` updates, re-initialize hidden units whose normalized activity E|h_i|/mean_k E|h_k| ≤ τ.

    *The Dormant Neuron Phenomenon in Deep Reinforcement Learning* (Sokar et al., 2023), as in
    Scores come from the latest *training* forward (forward hooks on the MLP's
    activation modules, training mode only): s_i = E_batch|h_i| / mean_k E_batch|h_k| per hidden
    layer, with h the activation output (before its dropout slot). After update t (t a multiple
    of ``every``) every unit with s_i ≤ τ is recycled: its incoming weights and bias are redrawn
    from PyTorch's default ``nn.Linear`` init, U(−1/√fan_in, 1/√fan_in), with the technique's own
    generator, and its outgoing weights (the next layer's column i) are set to 0, so the network
    function is unchanged at the reset for silent units (for τ > 0 the small contribution of a
    barely active unit is dropped). The lab's ``model.init_std`` is not used
    for the redraw. τ = 0 recycles only exactly silent units (dead ReLUs).

    As in the paper, the optimizer state of the recycled coordinates (Adam / Lion moments, SGD
    momentum: incoming rows, biases, outgoing columns) is zeroed, reached through
    ``bind_optimizer``; other coordinates and Adam's step count are untouched. Verify against the
    paper: the τ default (0.1) and the recycling period. Model mlp only. Nothing is logged;
    ``last_recycled`` holds the count of the latest recycle.
    """

    name = "redo"
    group = "continual"
    requires = (RECYCLABLE,)
    source = "The Dormant Neuron Phenomenon in Deep Reinforcement Learning (Sokar et al., 2023)"
    params = (
        Param("tau", float, 0.1, 0.0, 1.0, live=True, help="dormancy threshold τ on E|h_i|/mean_k E|h_k|"),
        Param("every", int, 1000, 1, 100000, live=True, log=True, help="recycle every this many updates"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_recyclable(cfg, cls.name)

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.layers, self.next_layers, acts = mlp_layers(setup.model, self.name)
        self.activity: list[Tensor | None] = [None] * len(self.layers)
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_recycled = 0
        for i, act in enumerate(acts):
            act.register_forward_hook(capture_hook(self.activity, i))

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @torch.no_grad()
    def recycle(self) -> int:
        """Recycle the dormant units of every hidden layer now; return how many were reset."""
        total = 0
        for layer, nxt, activity in zip(self.layers, self.next_layers, self.activity, strict=True):
            if activity is None:
                continue
            dormant = (dormant_scores(activity.abs().mean(0)) <= self["tau"]).nonzero().flatten()
            recycle_units(layer, nxt, dormant, self.generator, self.optimizer, bias="redraw")
            total += len(dormant)
        self.last_recycled = total
        return total

    def after_step(self, step: int) -> None:
        if step % self["every"] == 0:
            self.recycle()
