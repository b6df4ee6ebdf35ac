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

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from engine.batch import Batch, LossContext, Setup
from engine.registry import Registry
from engine.rng import technique_generator

__all__ = ["REGISTRY", "Batch", "LossContext", "Param", "Regularizer", "Setup", "register",
           "technique_generator", "weight_matrices"]


@dataclass(frozen=True)
class Param:
    """One typed, ranged parameter of a technique (drives validation, CLI listing and UI widgets)."""

    name: str
    type: type  # float, int, bool or str
    default: Any
    min: float | None = None
    max: float | None = None
    live: bool = False
    log: bool = False  # UI slider on a log scale
    choices: tuple[str, ...] | None = None
    help: str = ""

    def coerce(self, value: Any, where: str) -> Any:
        """Validate one value; raise ValueError('regularizers.x.p: …') naming the fix."""
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                return value.lower() in {"true", "1", "yes", "on"}
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(f"{where}: expected true or false (got {value!r})")
        if self.type is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError(f"{where}: must be one of {', '.join(self.choices or ())} (got {value!r})")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where}: expected a {self.type.__name__} (got {value!r})")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{where}: expected a {self.type.__name__} (got {value!r})") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: must be finite (got {value!r})")
        if self.type is int:
            if number != int(number):
                raise ValueError(f"{where}: expected an integer (got {value!r})")
            number = int(number)
        if self.min is not None and number < self.min:
            raise ValueError(f"{where}: must be ≥ {self.min} (got {value!r})")
        if self.max is not None and number > self.max:
            raise ValueError(f"{where}: must be ≤ {self.max} (got {value!r})")
        return number

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type.__name__, "default": self.default, "min": self.min,
            "max": self.max, "live": self.live, "log": self.log,
            "choices": list(self.choices) if self.choices else None, "help": self.help,
        }


class Regularizer:
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
    def summary(cls) -> str:
        """First line of the docstring: the one-line help the UI shows."""
        return (cls.__doc__ or cls.name).strip().splitlines()[0]

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse a RunConfig this technique cannot run with: raise ValueError naming the key.

        Called during config validation, so the CLI and the UI refuse before anything is built.
        """

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

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
