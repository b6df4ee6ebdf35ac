"""Regularizer plugin API: typed parameters, a registry, and the hooks the trainer calls.

A technique is one class in one file, registered with ``@register``. It implements only the
hooks it needs, and the trainer finds them one way: by override (``overrides``). This is the one
place the order of an update is documented; ``order`` sorts techniques within each chain (lower
first):

    commands          pause / resume / stop / set(key, value), applied before the step
    lr                base_lr × schedule(step) written into the optimizer
    transform_batch   input noise / views → mixup-type mixing
    transform_targets soft targets (label smoothing, PS-KD) after mixing
    closure           zero grads → forward → output_fn → data loss + Σ extra_loss → backward
                      → grad/norm (raw) → after_backward chain → the model's gradient
                      constraints (SAE: decoder-parallel part removed)
      output_fn       log-probabilities from logits (StableMax; at most one technique)
      extra_loss      penalties added to the data loss, logged as ``reg/<name>``
      after_backward  gradient surgery: ⊥Grad (order 0) → clipping (10) → noise (20)
    step              optimizer.step(), or one technique's wrapped step (SAM; at most one
                      technique) that may call the closure twice
    after_step        the model's own constraints (SAE decoder renormalisation), then the
                      techniques' proximal updates, decoupled decay, EMA teachers, schedules
    metrics           on log steps only, after the update: the technique's own ``group/name`` scalars

``output_fn`` and ``step`` run the data loss and the update for everyone, so two techniques that
override the same one cannot both be on; config validation (``requirements.check_techniques``)
refuses that, as it refuses two techniques of one ``exclusive`` group, a technique with a property
another ``refuses``, and a run whose declared traits (task, input kind, model traits) miss what
``tasks``/``requires`` ask; ``check_config`` adds what only the technique can judge.
``bind_optimizer`` is called once, after the optimizer is built (techniques are built before it,
see ``engine/trainer.py``), for techniques that must reach its state (ReDo's moment reset).
``hessian_shift`` is not a training hook: the curvature instruments ask every enabled technique
what its penalty adds to the Hessian diagonal, so no instrument needs to know any technique.

Every stochastic technique draws from its own ``torch.Generator`` seeded from (run seed,
technique name), so toggling one technique never shifts the data order, the init, or another
technique's noise — A/B runs with one toggle flipped depend on this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from engine.batch import Batch, LossContext, Setup
from engine.plugin import Param, Plugin, describe_params
from engine.registry import Registry
from engine.rng import technique_generator

if TYPE_CHECKING:
    from engine.traits import RunTraits

__all__ = ["REGISTRY", "Batch", "LossContext", "Need", "Param", "Regularizer", "Setup", "register",
           "technique_generator", "weight_matrices"]


@dataclass(frozen=True)
class Need:
    """One requirement a technique declares on the run, checked against ``engine.traits.run_traits``.

    ``inputs``: the run's input kind must be one of these; ``inputs_not``: none of these (e.g.
    integer ``tokens`` cannot take noise); ``model_traits``: the model must declare every one;
    ``model_lacks``: it must declare none. ``why`` says what the technique does that makes
    it need this and ``fix`` what the user should change; the refusal names the config key
    (``data.name`` for inputs, ``model.name`` for traits) so the UI can point at it.
    """

    why: str
    fix: str
    inputs: frozenset[str] = frozenset()
    inputs_not: frozenset[str] = frozenset()
    model_traits: frozenset[str] = frozenset()
    model_lacks: frozenset[str] = frozenset()

    def refusal(self, who: str, traits: RunTraits) -> str | None:
        """The one-line message refusing ``traits``, or None when they meet this need."""
        if self.inputs and traits.inputs not in self.inputs:
            return (f"regularizers.{who}: {self.why}; needs {'/'.join(sorted(self.inputs))} inputs, and "
                    f"data.name={traits.dataset} gives {traits.inputs}; {self.fix}")
        if traits.inputs in self.inputs_not:
            return (f"regularizers.{who}: {self.why}, which {traits.inputs} inputs (data.name={traits.dataset}) "
                    f"cannot take; {self.fix}")
        missing = sorted(self.model_traits - traits.model_traits)
        if missing:
            return (f"regularizers.{who}: {self.why}; needs a model with {', '.join(missing)}, which "
                    f"model.name={traits.model} does not declare; {self.fix}")
        present = sorted(self.model_lacks & traits.model_traits)
        if present:
            return (f"regularizers.{who}: {self.why}; not for a model with {', '.join(present)} "
                    f"(model.name={traits.model}); {self.fix}")
        return None


class Regularizer(Plugin):
    """Base class. Subclasses set the class attributes and override the hooks they need."""

    name: ClassVar[str]
    group: ClassVar[str]
    source: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    order: ClassVar[int] = 50  # position within a hook chain (lower first)
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "reconstruction")
    reparametrizes: ClassVar[bool] = False  # changes which tensors are parameters: built first
    # At most one enabled technique per exclusive group (e.g. one SAE sparsity mechanism).
    exclusive: ClassVar[str | None] = None
    # What this technique does that others may not tolerate (see ``properties()``), and the
    # properties of other techniques it cannot run with: refused pairwise, naming both.
    marks: ClassVar[frozenset[str]] = frozenset()
    refuses: ClassVar[frozenset[str]] = frozenset()
    # What the run must offer (input kind, model traits), checked against the run's declared
    # traits before ``check_config``; ``tasks`` above is the task requirement.
    requires: ClassVar[tuple[Need, ...]] = ()

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

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """Whether this technique implements ``hook`` (the one way the trainer finds hooks)."""
        return getattr(cls, hook) is not getattr(Regularizer, hook)

    @classmethod
    def properties(cls) -> frozenset[str]:
        """Declared ``marks`` plus those implied by the class: ``replaces_output`` (overrides
        ``output_fn``), ``wraps_step`` (overrides ``step``), ``reparametrizes``."""
        implied = {flag for flag, on in (("replaces_output", cls.overrides("output_fn")),
                                         ("wraps_step", cls.overrides("step")),
                                         ("reparametrizes", cls.reparametrizes)) if on}
        return cls.marks | implied

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

    def metrics(self) -> dict[str, float]:
        """Scalars describing the latest update (``group/name``), read on log steps only, so a
        technique converts tensors to floats there rather than on every step."""
        return {}

    def hessian_shift(self, params: dict[str, Tensor]) -> dict[str, float]:
        """λ this technique's penalty adds to the Hessian diagonal, by name of the ``params`` it covers.

        A coupled penalty (λ/2)Σθ² in the loss has Hessian λ on the parameters it covers; the
        sharpness and trace instruments add it analytically when asked to include penalties.
        Default: no penalty of that form.
        """
        return {}


REGISTRY: Registry[type[Regularizer]] = Registry("engine.regularizers", "regularizers")


def register(cls: type[Regularizer]) -> type[Regularizer]:
    """Class decorator: add a plugin to the registry under ``cls.name``."""
    return REGISTRY.add(cls.name, cls)


def weight_matrices(model: nn.Module, include_bias: bool = False) -> Iterable[nn.Parameter]:
    """Parameters a norm penalty covers: weight matrices/kernels (dim ≥ 2), biases optionally."""
    for param in model.parameters():
        if param.requires_grad and (param.dim() >= 2 or include_bias):
            yield param
