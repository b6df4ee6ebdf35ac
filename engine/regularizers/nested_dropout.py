"""Nested dropout: keep only the first b units of the penultimate layer, b ~ truncated Geometric(ρ)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers._features import feature_slot
from engine.regularizers.base import Need, Param, Regularizer, Setup, register


def truncated_geometric_pmf(rho: float, k: int) -> Tensor:
    """P(b = n) = ρ(1 − ρ)^{n−1} / (1 − (1 − ρ)^K) for n = 1..K (float64)."""
    n = torch.arange(1, k + 1, dtype=torch.float64)
    q = 1.0 - rho
    return rho * q ** (n - 1) / (1.0 - q**k)


def sample_truncated_geometric(n: int, rho: float, k: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of b ~ Geometric(ρ) on {1, 2, …} conditioned on b ≤ K, by inverting the CDF
    P(b ≤ m) = (1 − (1 − ρ)^m)/(1 − (1 − ρ)^K); int64, on the CPU."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    q = 1.0 - rho
    b = torch.ceil(torch.log1p(-u * (1.0 - q**k)) / math.log(q))
    return b.clamp(1, k).long()


@register
class NestedDropout(Regularizer):
    """Keep only the first b penultimate units, b ~ truncated Geometric(ρ) per sample: importance-ordered features.

    *Learning Ordered Representations with Nested Dropout* (Rippel et al., 2014), used against
    label noise in *Compressing Features for Learning with Noisy Labels* (Chen et al., 2022).
    In training, for each sample independently, b is drawn from Geometric(ρ) truncated to
    [1, K] (K = the number of penultimate units; E[b] ≈ 1/ρ when 1/ρ ≪ K): units 1..b are kept
    and units b+1..K are set to exactly 0, with **no rescaling**. Evaluation (eval mode) uses all
    units. The mask is applied by a forward pre-hook on the dropout slot that feeds the readout
    (so ``model.features(x)`` stays clean, as with dropout; plain dropout on the same slot, if
    on, acts on the truncated features). Needs such a slot: refused for the sae and the
    transformer. b is drawn on the CPU from the technique's own generator; ``last_b`` holds the
    latest draw.
    """

    name = "nested_dropout"
    group = "repr"
    requires = (
        Need(why="it truncates the dropout slot directly before the readout",
             fix="use a model with one (e.g. model.name=mlp)", model_traits=frozenset({"readout_dropout"})),
    )
    marks = frozenset({"alters_forward"})
    source = ("Learning Ordered Representations with Nested Dropout (Rippel et al., 2014); "
              "Compressing Features for Learning with Noisy Labels (Chen et al., 2022)")
    params = (
        Param("rho", float, 0.05, 0.005, 0.5, log=True, help="geometric parameter ρ of b (E[b] ≈ 1/ρ)"),
        Param("layer", str, "penultimate", choices=("penultimate",),
              help="where the truncation acts: the penultimate features (the slot feeding the readout)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        slot = feature_slot(setup.model, getattr(setup.dataset, "x_train", None))
        if slot is None:
            model = type(setup.model).__name__
            raise ValueError(f"regularizers.nested_dropout: model {model} has no dropout slot directly before "
                             "its readout")
        self.slot = slot
        self.last_b: Tensor | None = None
        self.handle = slot.register_forward_pre_hook(self._truncate)

    def mask(self, n: int, k: int) -> Tensor:
        """An (n, K) 0/1 mask keeping units 1..b_i in row i; draws b and stores it in ``last_b``."""
        b = sample_truncated_geometric(n, self["rho"], k, self.generator)
        self.last_b = b
        return (torch.arange(k).unsqueeze(0) < b.unsqueeze(1)).float()

    def _truncate(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        if not module.training:
            return None
        h = inputs[0]
        m = self.mask(h.shape[0], h.shape[1]).to(device=h.device, dtype=h.dtype)
        m = m.view(*m.shape, *([1] * (h.dim() - 2)))  # channels of a conv map are the units
        return (h * m, *inputs[1:])
