"""Model registry: MLP, quadratic MLP, CNN, tiny transformer, random features, SAE.

Every model maps a batch of inputs to outputs (logits, regression outputs or reconstructions)
and exposes ``features(x)``: the penultimate representation used for embeddings and collapse
metrics. Models that support dropout list their ``nn.Dropout`` modules in ``dropout_slots``
(created with p = ``model.dropout``); the ``dropout`` regularizer sets their p live.

Adding a model is adding one module here with a ``ModelFamily`` subclass registered by
``@register_model``. The class declares what the model accepts (tasks and input kinds, checked
against the dataset's declarations at config time) and its ``traits`` — capabilities techniques
and diagnostics ask for (``"dropout_slots"``, ``"relu_units"``, ...) instead of naming models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from engine.plugin import Plugin
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


# The capability names in use, documented once (a trait is a free-form string: a new one needs no edit here).
TRAITS = {
    "dropout_slots": "has nn.Dropout slots whose p the dropout technique sets live",
    "relu_units": "hidden ReLU activation modules (hookable; dead-unit counts) when model.activation=relu "
                  "or always for fixed-ReLU architectures",
    "hidden_stack": "an MLP-style stack of hidden layers (manifold mixup, unit recycling)",
    "first_layer_linear": "a first linear layer on the raw inputs",
    "conv": "convolutional feature maps",
    "sae_latents": "sparse-autoencoder latents",
    "fixed_features": "random fixed features with a trainable linear readout only",
    "attention": "self-attention blocks",
    "crelu": "supports model.activation=crelu (doubles the hidden width)",
    "own_activation": "fixes its own nonlinearity and ignores model.activation",
    "linear_readout": "a final nn.Linear head on the penultimate features (etf_classifier replaces it)",
    "readout_dropout": "a dropout slot right before the head (nested_dropout truncates it)",
}
ALL_TASKS = frozenset({"classification", "regression", "reconstruction"})
VECTOR_INPUTS = frozenset({"points2d", "vector", "image"})  # anything a flattening first layer can read


class ModelFamily(Plugin):
    """Base of a model declaration: what it accepts, what it can do, and how it is built."""

    tasks: ClassVar[frozenset[str]] = ALL_TASKS
    inputs: ClassVar[frozenset[str]] = VECTOR_INPUTS
    traits: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse a model section (``cfg`` is ``ModelConfig``) this model cannot build, naming the key."""


REGISTRY: Registry[type[ModelFamily]] = Registry(__name__, "model.name", default="mlp")


def register_model(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: add a ``ModelFamily`` subclass to the registry under ``cls.name``."""
    REGISTRY.add(cls.name, cls)
    return cls


def build_model(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """Build the configured model for ``dataset`` (seed torch's global RNG before calling)."""
    return REGISTRY.lookup(cfg.name).build(cfg, dataset)


def all_models() -> dict[str, type[ModelFamily]]:
    return REGISTRY.sorted_items()
