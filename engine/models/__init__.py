"""Model registry: MLP, quadratic MLP, CNN, tiny transformer, random features, SAE.

Every model maps a batch of inputs to outputs (logits, regression outputs or reconstructions)
and exposes ``features(x)``: the penultimate representation used for embeddings and collapse
metrics. Models that support dropout list their ``nn.Dropout`` modules in ``dropout_slots``
(created with p = ``model.dropout``); the ``dropout`` regularizer sets their p live.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

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
REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in REGISTRY:
            raise ValueError(f"duplicate model {name!r}")
        REGISTRY[name] = fn
        return fn

    return deco


_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def build_model(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """Build the configured model for ``dataset`` (seed torch's global RNG before calling)."""
    _load_all()
    return REGISTRY[cfg.name](cfg, dataset)
