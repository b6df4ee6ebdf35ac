"""Weight normalization (Salimans & Kingma 2016)."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from engine.regularizers.base import Need, Regularizer, Setup, register


@register
class WeightNorm(Regularizer):
    """Reparametrise every Linear weight as w = g·v/‖v‖, splitting each unit's length from its direction.

    Source: Salimans & Kingma, *Weight Normalization: A Simple Reparameterization to Accelerate
    Training of Deep Neural Networks* (NeurIPS 2016), via torch's
    ``parametrizations.weight_norm`` (dim 0: one length g per output unit). The trainer builds
    this technique before the optimizer, so the optimizer holds g and v instead of w. The loss is
    invariant to the scale of v, so an L2 penalty or weight decay on v only shrinks ‖v‖ and raises
    the effective learning rate η/‖v‖²; sharpness is then measured in (g, v)
    coordinates. The SAE keeps its own unit-norm decoder constraint instead.
    """

    name = "weight_norm"
    group = "norm"
    requires = (
        Need(why="it reparametrises every Linear layer, whose weights this model constrains or freezes",
             fix="disable it", model_lacks=frozenset({"sae_latents", "fixed_features"})),
    )
    source = "Weight Normalization (Salimans & Kingma, 2016)"
    reparametrizes = True

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.layers = [m for m in setup.model.modules() if isinstance(m, nn.Linear)]
        if not self.layers:
            raise ValueError("regularizers.weight_norm: the model has no Linear layers")
        for layer in self.layers:
            weight_norm(layer, name="weight", dim=0)
