"""A small CNN for the 8×8 digits images.

conv(C→c, 3×3, pad 1) → act → conv(c→2c, 3×3, pad 1) → act → maxpool 2 → flatten
→ Linear(2c·H/2·W/2, width) → act  [= features]  → Dropout → Linear(width, out)  [= head]

c = 16 channels: on 8×8 inputs this gives 32×4×4 = 512 pooled features and ≈ 70k parameters at
width 128 — the same order as the 64-256-256-10 MLP of the digits presets, so the two can be
compared at similar capacity, while staying a few ms per full-batch step on CPU. ``model.depth``
is not used (the conv stack is fixed); ``model.width`` is the fully connected width.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import Tensor, nn

from engine.models import LabModel, ModelFamily, register_model
from engine.models.mlp import apply_init, make_activation

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.data import Dataset

CHANNELS = 16


def image_shape(dataset: Dataset) -> tuple[int, int, int]:
    """(C, H, W) of one example: ``meta["image_shape"]`` if given, else the input shape (square if flat)."""
    flat = math.prod(dataset.input_shape)
    shape = tuple(int(s) for s in dataset.meta.get("image_shape", dataset.input_shape))
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side != shape[0]:
            raise ValueError(f"model.name: cnn needs square images; cannot reshape {shape[0]} inputs")
        shape = (side, side)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or math.prod(shape) != flat:
        raise ValueError(f"model.name: cnn cannot view inputs of shape {dataset.input_shape} as an image {shape}")
    return shape  # type: ignore[return-value]


class CNN(LabModel):
    """Two 3×3 conv layers, one max-pool, one hidden fully connected layer (see module docstring)."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int, width: int, channels: int = CHANNELS,
                 activation: str = "relu", bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        c_in, h, w = shape
        self.shape = shape
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, channels, 3, padding=1, bias=bias), make_activation(activation),
            nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=bias), make_activation(activation),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(2 * channels * (h // 2) * (w // 2), width, bias=bias)
        self.fc_act = make_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.dropout_slots.append(self.drop)
        self.out = nn.Linear(width, out_dim, bias=bias)

    def features(self, x: Tensor) -> Tensor:
        h = self.conv(x.reshape(x.shape[0], *self.shape))
        return self.fc_act(self.fc(h.flatten(1)))

    def head(self, h: Tensor) -> Tensor:
        return self.out(self.drop(h))


@register_model
class CNNModel(ModelFamily):
    """Small two-block CNN for images (8×8 digits)."""

    name = "cnn"
    tasks = frozenset({"classification"})
    inputs = frozenset({"image"})
    traits = frozenset({"dropout_slots", "relu_units", "conv", "linear_readout", "readout_dropout"})

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        return build_cnn(cfg, dataset)


def build_cnn(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    model = CNN(image_shape(dataset), dataset.output_dim, cfg.width, CHANNELS, cfg.activation, cfg.bias, cfg.dropout)
    apply_init(model, cfg)
    return model.float()
