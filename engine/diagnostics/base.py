"""Diagnostic plugin API: one class per instrument, declaring its schedule, cost and needs.

Modelled on Cockpit's quantities. An instrument measures the model *as it is* at a step and must
never change the run it measures: the trainer calls every instrument inside ``preserved_state``,
which restores weights, buffers, train/eval mode, ``requires_grad`` and every RNG state bit for
bit. Instruments evaluate the model through ``DiagnosticContext`` — a fixed, seeded probe set, the
data objective exactly as optimised (loss, target transform, output function) and
``torch.func.functional_call`` for perturbed parameters — so the live module is never mutated.

Default cadence: the cheap default-on instruments (collapse, ranks, dead units, calibration, SAE)
run every 200 steps — ≈ 20 ms a call on the digits MLP, so ≈ 5–10 % of a 1 ms/step mini-batch run;
sharpness every 50 and trace every 200 are opt-in (presets turn them on); density and landscape
run on demand only. ``diagnostics.<name>.every`` raises or lowers any of them per run.

Conventions:
- Eval mode by default (dropout off): panels say so.
- Curvature is of the mean *data* loss on the probe set; parameter penalties (L2, …), per-sample
  regularizers (ELR) and decoupled weight decay are excluded. Coupled L2 can be added
  analytically (+λ to every eigenvalue, +λ·P to the trace) by the instrument that reports it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from engine.batch import Batch
from engine.plugin import Param, Plugin, describe_params
from engine.registry import Registry
from engine.rng import technique_generator
from engine.traits import run_traits

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.data import Dataset
    from engine.models import LabModel

CHUNK = 1000  # probe examples per forward; losses are summed per chunk and divided by n (exact)


@dataclass(frozen=True)
class MetricSpec:
    """One scalar an instrument (or the trainer) records, declared so a page can draw it without knowing it.

    ``name`` is the stored ``group/name``; a ``{i}`` in it stands for a run of integers
    (``sharpness/eig_{i}``, ``units/dead_frac_l{i}``) and may be used in ``label`` too. ``panel``
    is the key of the ``PanelSpec`` it is drawn on. ``role`` says how: ``line`` (a curve over
    steps), ``reference`` (a dashed line another curve is read against, e.g. the stability
    threshold 2/η) or ``flag`` (a 0/1 setting shown in the panel's caption, not as a curve).
    """

    name: str
    label: str
    unit: str = ""
    panel: str = ""
    meaning: str = ""
    role: str = "line"

    def matches(self, metric: str) -> str | None:
        """The ``{i}`` value (or "") when ``metric`` is this declaration's name; None otherwise."""
        if "{i}" not in self.name:
            return "" if metric == self.name else None
        head, tail = self.name.split("{i}", 1)
        if len(metric) <= len(head) + len(tail) or not (metric.startswith(head) and metric.endswith(tail)):
            return None
        middle = metric[len(head):len(metric) - len(tail)]
        return middle if middle.isdigit() else None


@dataclass(frozen=True)
class PanelSpec:
    """One chart: its title, y-axis title (with the unit) and scale.

    ``x = "index"`` draws indexed metrics (``sharpness/eig_{i}``) against their index, one curve
    per measured step — a spectrum, not a time series.
    """

    key: str
    title: str
    y_title: str = ""
    log_y: bool = False
    x: str = "step"
    note: str = ""
    x_title: str = ""  # default: "training step", or "index" for an index panel


@dataclass(frozen=True)
class ArtifactSpec:
    """An array result an instrument stores (``Measurement.artifacts[kind]``), drawn by ``figure``."""

    kind: str
    label: str
    meaning: str = ""


@dataclass
class Measurement:
    """What one call returns: scalar metrics (``group/name``) and optional array artifacts."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class DiagnosticContext:
    """Everything an instrument may read at a step, with the probe set fixed for the whole run."""

    def __init__(self, model: LabModel, data: Dataset, cfg: RunConfig, probe: Tensor,
                 loss_fn: Callable[[Tensor, Batch], Tensor], optimizer: torch.optim.Optimizer,
                 lr: Callable[[], float], *, techniques: Sequence[Any] = (),
                 output_fn: Callable[[Tensor], Tensor] | None = None) -> None:
        self.model, self.data, self.cfg, self.probe = model, data, cfg, probe
        # The run's enabled techniques (asked for their ``hessian_shift``) and the output function
        # one of them installed (None: log-softmax); instruments read these, never technique names.
        self.techniques, self.output_fn = tuple(techniques), output_fn
        self.loss_fn, self.optimizer, self._lr = loss_fn, optimizer, lr
        self.step = 0
        self._features_cache: tuple[int, Tensor, Tensor] | None = None

    @property
    def lr(self) -> float:
        return self._lr()

    @property
    def probe_x(self) -> Tensor:
        return self.data.x_train[self.probe]

    @property
    def probe_y(self) -> Tensor:
        return self.data.y_train[self.probe]

    def named_params(self) -> dict[str, Tensor]:
        """Trainable parameters by name (the space Hessians and landscapes live in)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def objective(self, params: dict[str, Tensor] | None = None) -> Tensor:
        """Mean data loss on the probe set at ``params`` (default: the live weights), eval mode.

        Differentiable in ``params``: pass tensors with ``requires_grad`` for HVPs.
        """
        params = self.named_params() if params is None else params
        x, y = self.probe_x, self.probe_y
        n = x.shape[0]
        total: Tensor | None = None
        for start in range(0, n, CHUNK):
            xb, yb = x[start:start + CHUNK], y[start:start + CHUNK]
            out = functional_call(self.model, params, (xb,))
            part = self.loss_fn(out, Batch(xb, yb, torch.arange(len(xb), device=xb.device))) * len(xb)
            total = part if total is None else total + part
        assert total is not None
        return total / n

    @torch.no_grad()
    def features(self) -> tuple[Tensor, Tensor]:
        """(outputs, penultimate features) of the probe set at the current step, computed once."""
        if self._features_cache is None or self._features_cache[0] != self.step:
            outs, feats = [], []
            for start in range(0, self.probe.shape[0], CHUNK):
                out, feat = self.model.forward_with_features(self.probe_x[start:start + CHUNK])
                outs.append(out)
                feats.append(feat)
            self._features_cache = (self.step, torch.cat(outs), torch.cat(feats))
        return self._features_cache[1], self._features_cache[2]


class Diagnostic(Plugin):
    """Base class of an instrument. Subclasses set the class attributes and ``measure``."""

    name: ClassVar[str]
    group: ClassVar[str]  # panel: curvature, collapse, dynamics, …
    every: ClassVar[int]  # default cadence in steps; 0 = on demand only
    cost: ClassVar[str]  # rough cost in forward/HVP units, shown in the UI's cost meter
    needs: ClassVar[frozenset[str]] = frozenset()  # "hessian", "features", "full_batch", "per_example"
    params: ClassVar[tuple[Param, ...]] = ()
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "reconstruction")
    default_on: ClassVar[bool] = False  # enabled in every run unless switched off
    # What it emits, declared so pages and docs draw and explain it without naming a metric:
    outputs: ClassVar[tuple[MetricSpec, ...]] = ()
    panels: ClassVar[tuple[PanelSpec, ...]] = ()
    artifacts: ClassVar[tuple[ArtifactSpec, ...]] = ()

    def __init__(self, ctx: DiagnosticContext, seed: int, **values: Any) -> None:
        self.values = {p.name: values.get(p.name, p.default) for p in self.params}
        self.generator = technique_generator(seed, f"diagnostic:{self.name}")

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The catalog entry: schedule, cost and needs besides name, summary and parameters."""
        return {"name": cls.name, "group": cls.group, "every": cls.every, "cost": cls.cost,
                "needs": sorted(cls.needs), "default_on": cls.default_on, "summary": cls.summary(),
                "params": describe_params(cls.params)}

    @classmethod
    def applies(cls, cfg: RunConfig) -> bool:
        """Whether the instrument makes sense for this run (task, labels, architecture)."""
        return run_traits(cfg).task in cls.tasks

    def measure(self, ctx: DiagnosticContext, step: int) -> Measurement:
        raise NotImplementedError


REGISTRY: Registry[type[Diagnostic]] = Registry("engine.diagnostics", "diagnostics")


def register(cls: type[Diagnostic]) -> type[Diagnostic]:
    """Class decorator: add a plugin to the registry under ``cls.name``."""
    return REGISTRY.add(cls.name, cls)


@contextmanager
def preserved_state(model: nn.Module, extra_generators: tuple[torch.Generator, ...] = ()) -> Iterator[None]:
    """Run a block and put the model and every RNG back exactly as they were.

    Restores parameter and buffer values (by copy, so bit-exact), ``requires_grad`` flags,
    gradients, train/eval mode of every submodule, and torch (CPU and CUDA), NumPy and Python
    random states, plus any private generators passed in.
    """
    params = [(p, p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.clone())
              for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np_rng, py_rng = np.random.get_state(), random.getstate()
    gen_states = [g.get_state() for g in extra_generators]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value, requires_grad, grad in params:
                p.copy_(value)
                p.requires_grad_(requires_grad)
                p.grad = grad
            for b, value in buffers:
                b.copy_(value)
        for m, training in modes:
            m.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        for g, state in zip(extra_generators, gen_states, strict=True):
            g.set_state(state)
