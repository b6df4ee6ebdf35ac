"""Activation L1 (ProSparse-style): a progressive L1 penalty on post-ReLU hidden activations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from engine.capabilities import has_relu_modules
from engine.regularizers._common import elapsed_steps
from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register
from engine.traits import run_traits

# Activation modules whose output is exactly 0 on a half-line (as engine/diagnostics/representation.py).
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Threshold)


class ActivationRecorder:
    """Forward hooks that keep the latest training-mode output of each module (with its graph).

    Only outputs produced in training mode with grad enabled are kept (evaluation and
    diagnostics run in eval mode or under no_grad), and each module's slot is overwritten by its
    next call, so what ``take()`` returns is the current update's forward — also under SAM, whose
    closure re-runs the forward before each ``extra_loss``.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.latest: dict[int, Tensor] = {}
        self.handles: list[RemovableHandle] = [
            m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)
        ]

    def _hook(self, i: int) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(module: nn.Module, _inputs: Any, output: Tensor) -> None:
            if module.training and torch.is_grad_enabled():
                self.latest[i] = output
        return hook

    def take(self) -> list[Tensor]:
        """The recorded outputs (in module order), clearing the slots."""
        out = [self.latest[i] for i in sorted(self.latest)]
        self.latest.clear()
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register
class ActivationL1(Regularizer):
    """Add λ(t)·Σ_l mean|a_l| over post-ReLU hidden activations, λ ramped up in smooth stages (sparse activations).

    *ProSparse: Introducing and Enhancing Intrinsic Activation Sparsity within Large Language
    Models* (Song et al., 2024). Penalty: λ(t)·Σ_l mean_{b,j}|a_{l,bj}| over the outputs of every
    ReLU-family activation module (found and hooked as the ``units`` diagnostic does; conv maps
    are averaged over channels and positions), so the gradient on one activation is
    λ(t)·sign(a)/(B·d_l). Outputs are captured by forward hooks during the training forward —
    no second forward.

    Schedules, with t = completed updates and T the run length: ``constant``: λ(t) = λ.
    ``progressive`` (lab convention after §3.2 of the paper — verify there): λ₀ = 0.1·λ/S during
    the warm-up t < w = ``warmup``·T; then S = ``stages`` equal stages filling [w, e = ``end``·T),
    stage i rising along a quarter sine from λ_{i−1} to λ_i = λ₀ + (λ − λ₀)·i/S,
    λ(t) = λ_{i−1} + (λ_i − λ_{i−1})·sin(π/2·(t − t_i)/Δ), Δ = (e − w)/S; λ from e on. The
    schedule is continuous and non-decreasing. FATReLU (a positive ReLU threshold) is its
    own technique, ``fatrelu``. Needs ReLU-family activation modules: refused for tanh/GELU/x² models and the sae
    (use ``sae_l1`` there).
    """

    name = "activation_l1"
    group = "repr"
    source = "ProSparse: Introducing and Enhancing Intrinsic Activation Sparsity within LLMs (Song et al., 2024)"
    params = (
        Param("lambda", float, 1e-4, 0.0, 0.1, live=True, log=True, help="final strength λ of λ·Σ_l mean|a_l|"),
        Param("schedule", str, "progressive", choices=("constant", "progressive"),
              help="constant: λ throughout; progressive: warm-up at λ₀ then S quarter-sine stages up to λ"),
        Param("stages", int, 3, 1, 10, help="progressive: number of rising stages S"),
        Param("warmup", float, 0.1, 0.0, 1.0, help="progressive: warm-up at λ₀ = 0.1·λ/S, as a fraction of the run"),
        Param("end", float, 0.8, 0.0, 1.0, help="progressive: fraction of the run at which λ is reached"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if not has_relu_modules(cfg):
            sparse = run_traits(cfg).has("sae_latents")
            hint = "; use an SAE sparsity technique for its latents" if sparse else "; set model.activation=relu"
            raise ValueError(f"regularizers.activation_l1: needs ReLU activation modules, which model "
                             f"{cfg.model.name} (activation {cfg.model.activation}) does not have{hint}")
        values = cfg.regularizers.get(cls.name, {})
        warmup, end = values.get("warmup", 0.1), values.get("end", 0.8)
        if values.get("schedule", "progressive") == "progressive" and warmup >= end:
            raise ValueError(f"regularizers.activation_l1.warmup: must be < end ({end}) (got {warmup})")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        modules = [m for m in setup.model.modules() if isinstance(m, RELU_FAMILY)]
        if not modules:
            model = type(setup.model).__name__
            raise ValueError(f"regularizers.activation_l1: model {model} has no ReLU activation modules to penalise")
        if self["schedule"] == "progressive" and self["warmup"] >= self["end"]:
            raise ValueError(f"regularizers.activation_l1.warmup: must be < end ({self['end']}) (got {self['warmup']})")
        self.recorder = ActivationRecorder(modules)

    def lambda_at(self, t: float) -> float:
        """λ(t) after ``t`` completed updates."""
        lam = self["lambda"]
        if self["schedule"] == "constant":
            return lam
        total, stages = self.setup.total_steps, self["stages"]
        w, e = self["warmup"] * total, self["end"] * total
        lam0 = 0.1 * lam / stages
        if t < w:
            return lam0
        if t >= e:
            return lam
        width = (e - w) / stages
        i = min(int((t - w) // width), stages - 1)  # 0-based stage index
        lo = lam0 + (lam - lam0) * i / stages
        hi = lam0 + (lam - lam0) * (i + 1) / stages
        return lo + (hi - lo) * math.sin(0.5 * math.pi * (t - w - i * width) / width)

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        acts = self.recorder.take()
        if not acts:
            return None
        lam = self.lambda_at(elapsed_steps(ctx.step))
        return lam * sum(a.abs().mean() for a in acts)
