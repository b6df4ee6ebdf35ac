"""Regularizer plugin API: typed parameters, a registry, and the hooks the trainer calls.

A technique is one class in one file, registered with ``@register``. It implements only the
hooks it needs; the trainer calls them in one documented order (see ``engine/trainer.py``):

    transform_batch   input noise / views → mixup-type mixing (``order`` sorts them)
    transform_targets soft targets (label smoothing, PS-KD) after mixing
    output_fn         log-probabilities from logits (StableMax; at most one technique)
    extra_loss        penalties added to the data loss, logged as ``reg/<name>``
    after_backward    gradient surgery: ⊥Grad (order 0) → clipping (10) → noise (20)
    step              wrapped optimizer step (SAM; at most one technique)
    after_step        proximal updates, EMA teachers, schedules

``bind_optimizer`` is called once, after the optimizer is built (techniques are built before it,
see ``engine/trainer.py``), for techniques that must reach its state (ReDo's moment reset).

Every stochastic technique draws from its own ``torch.Generator`` seeded from (run seed,
technique name), so toggling one technique never shifts the data order, the init, or another
technique's noise — A/B runs with one toggle flipped depend on this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from engine.batch import Batch, LossContext, Setup
from engine.plugin import Param, Plugin, describe_params
from engine.registry import Registry
from engine.rng import technique_generator

__all__ = ["REGISTRY", "Batch", "LossContext", "Param", "Regularizer", "Setup", "register",
           "technique_generator", "weight_matrices"]


class Regularizer(Plugin):
    """Base class. Subclasses set the class attributes and override the hooks they need."""

    name: ClassVar[str]
    group: ClassVar[str]
    source: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    order: ClassVar[int] = 50  # position within a hook chain (lower first)
    replaces_output: ClassVar[bool] = False
    wraps_step: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "reconstruction")
    conflicts: ClassVar[tuple[str, ...]] = ()  # techniques that cannot be combined with this one
    reparametrizes: ClassVar[bool] = False  # changes which tensors are parameters: built first

    def __init__(self, setup: Setup, **values: Any) -> None:
        self.setup = setup
        self.values = {p.name: values.get(p.name, p.default) for p in self.params}
        self.generator = technique_generator(setup.seed, self.name, "cpu")

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The catalog entry (CLI ``regularizers --json`` and the UI widgets)."""
        return {"name": cls.name, "group": cls.group, "source": cls.source, "summary": cls.summary(),
                "params": describe_params(cls.params)}

    def set(self, key: str, value: Any) -> None:
        """Live change of one parameter (validated; refused for parameters not marked live)."""
        spec = self.param(key)
        if not spec.live:
            raise ValueError(f"regularizers.{self.name}.{key} cannot change during a run; start a new run")
        self.values[key] = spec.coerce(value, f"regularizers.{self.name}.{key}")

    # ---- hooks (no-ops by default) -------------------------------------------------------
    def transform_batch(self, batch: Batch, step: int) -> Batch:
        return batch

    def transform_targets(self, batch: Batch, step: int) -> Batch:
        return batch

    def output_fn(self, logits: Tensor) -> Tensor:  # returns log-probabilities
        raise NotImplementedError

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        return None

    def after_backward(self, params: list[nn.Parameter], step: int) -> dict[str, float]:
        return {}

    def step(self, closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        return None

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once with the run's optimizer, after it is built (default: ignore it)."""
        return None


REGISTRY: Registry[type[Regularizer]] = Registry("engine.regularizers", "regularizers")


def register(cls: type[Regularizer]) -> type[Regularizer]:
    """Class decorator: add a plugin to the registry under ``cls.name``."""
    return REGISTRY.add(cls.name, cls)


def weight_matrices(model: nn.Module, include_bias: bool = False) -> Iterable[nn.Parameter]:
    """Parameters a norm penalty covers: weight matrices/kernels (dim ≥ 2), biases optionally."""
    for param in model.parameters():
        if param.requires_grad and (param.dim() >= 2 or include_bias):
            yield param
