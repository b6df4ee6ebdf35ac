"""Model registry: MLP, quadratic MLP, CNN, tiny transformer, random features, SAE.

Every model maps a batch of inputs to outputs (logits, regression outputs or reconstructions)
and exposes ``features(x)``: the penultimate representation used for embeddings and collapse
metrics. Models that support dropout list their ``nn.Dropout`` modules in ``dropout_slots``
(created with p = ``model.dropout``); the ``dropout`` regularizer sets their p live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

from engine.registry import Registry

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.data import Dataset


class LabModel(nn.Module):
    """Base: subclasses implement ``features`` and ``head``; ``forward = head ∘ features``."""

    dropout_slots: list[nn.Dropout]

    def __init__(self) -> None:
        super().__init__()
        self.dropout_slots = []

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def before_optimizer_step(self) -> None:
        """Gradient constraints of the architecture (SAE: keep decoder columns on the sphere)."""

    def after_optimizer_step(self) -> None:
        """Parameter constraints of the architecture (SAE: renormalise decoder columns)."""

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.head(h), h


Builder = Callable[["ModelConfig", "Dataset"], LabModel]
REGISTRY: Registry[Builder] = Registry(__name__, "model.name")
register_model = REGISTRY.register


def build_model(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """Build the configured model for ``dataset`` (seed torch's global RNG before calling)."""
    return REGISTRY.lookup(cfg.name)(cfg, dataset)
