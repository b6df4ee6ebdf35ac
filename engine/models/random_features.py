"""Random-features model for double descent (Belkin et al. 2019; ``phenomena.md`` §6).

φ(x) = act(x W + b) with W ~ N(0, 1/in) (variance) and b ~ N(0, 0.5²) drawn once and frozen, then
a trainable linear readout f(x) = φ(x) β. Only β is a parameter: W and b are *buffers*, so they
move with ``.to(device)`` and are saved in the state dict but never reach an optimizer, a weight
decay or a gradient. The feature bias follows ``model.bias`` (the calibration of §6 used it: with
centred inputs and no bias half of the ReLU features would be nearly linear in x).

The readout has no bias and starts at zero (unless ``model.init_std`` is set): gradient descent
on the squared loss from β = 0 stays in the row space of the feature matrix and converges to the
minimum-norm interpolant pinv(F) Y — the closed-form solution of §6 — in the limit. Near N ≈ n,
though, F is so ill-conditioned (cond ≈ 1e5 on digits) that gradient descent stops far short of
it in any practical budget and the double-descent peak shrinks; the ``lstsq_readout`` technique
solves the readout exactly instead, which the ``double-descent`` preset uses. (``model.init_scale``
has no effect unless ``init_std`` is set.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.models import LabModel, ModelFamily, register_model
from engine.models.mlp import flat_dim, make_activation, scale_parameters_

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.data import Dataset

FEATURE_BIAS_STD = 0.5


class RandomFeatures(LabModel):
    """Frozen random first layer (buffers ``rf_weight`` (in × width), ``rf_bias``) + trainable ``readout``."""

    rf_weight: Tensor
    rf_bias: Tensor

    def __init__(self, in_dim: int, out_dim: int, width: int, activation: str = "relu", bias: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("rf_weight", torch.randn(in_dim, width) / math.sqrt(in_dim))
        self.register_buffer("rf_bias", torch.randn(width) * FEATURE_BIAS_STD if bias else torch.zeros(width))
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.dropout_slots.append(self.drop)
        self.readout = nn.Linear(width, out_dim, bias=False)
        nn.init.zeros_(self.readout.weight)

    def features(self, x: Tensor) -> Tensor:
        return self.act(x.flatten(1) @ self.rf_weight + self.rf_bias)

    def head(self, h: Tensor) -> Tensor:
        return self.readout(self.drop(h))


@register_model
class RandomFeaturesModel(ModelFamily):
    """Fixed random features with a trainable linear readout (double descent)."""

    name = "random_features"
    traits = frozenset({"dropout_slots", "relu_units", "fixed_features", "linear_readout", "readout_dropout"})

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        return build_random_features(cfg, dataset)


def build_random_features(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """``model.width`` = number of random features N; ``model.depth`` is ignored."""
    model = RandomFeatures(flat_dim(dataset), dataset.output_dim, cfg.width, cfg.activation, cfg.bias, cfg.dropout)
    if cfg.init_std is not None:
        nn.init.normal_(model.readout.weight, 0.0, cfg.init_std)
    scale_parameters_(model, cfg.init_scale)
    return model.float()
