"""Sharpness-aware minimization: step with the gradient taken at the worst point of a ρ-ball."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from engine.regularizers.base import Param, Regularizer, Setup, register


@register
class SAM(Regularizer):
    """Minimize the worst loss in a ρ-ball: step with the gradient at θ + ρ·g/‖g‖ instead of at θ.

    *Sharpness-Aware Minimization for Efficiently Improving Generalization* (Foret et al., ICLR
    2021); ``adaptive`` is ASAM (*ASAM: Adaptive Sharpness-Aware Minimization*, Kwon et al.,
    2021): e = ρ·T²g/‖Tg‖ with T = |θ| (the paper suggests a larger ρ, ≈ 2, there).

        g = ∇L_B(θ);  e = ρ·g/(‖g‖ + 1e-12)   (norm over ALL parameters jointly)
        θ ← θ + e;  g′ = ∇L_B(θ);  θ ← θ_saved;  base_optimizer.step(g′)

    Lab convention: the ascent direction uses the *raw* gradient (the closure
    is called without the after_backward chain); the chain (⊥Grad, clipping, noise) acts on g′,
    the gradient at the perturbed point that the update uses. θ is restored from saved copies,
    not by subtracting e, so it is bit-exact. ρ = 0 skips the perturbation and the second pass
    entirely, reproducing the base optimizer bit-for-bit. Costs two forward/backward passes.
    With BatchNorm the second pass must not update running statistics (the lab models have none).
    """

    name = "sam"
    group = "sharpness"
    source = ("Sharpness-Aware Minimization for Efficiently Improving Generalization (Foret et al., 2021); "
              "ASAM: Adaptive Sharpness-Aware Minimization (Kwon et al., 2021)")
    params = (
        Param("rho", float, 0.05, 0.0, 0.5, live=True, help="radius ρ of the neighbourhood"),
        Param("adaptive", bool, False, help="ASAM: scale the ball by |θ| per coordinate"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.last_perturbation_norm = 0.0

    def perturbation(self, params: list[Tensor], rho: float) -> list[Tensor]:
        """e for each parameter from its current ``.grad`` (ρ·g/‖g‖, or ρ·T²g/‖Tg‖ adaptively)."""
        with torch.no_grad():
            if self["adaptive"]:
                scaled = [p.abs() * p.grad for p in params]
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
                return [p.abs() * s * (rho / (norm + 1e-12)) for p, s in zip(params, scaled, strict=True)]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
            return [p.grad * (rho / (norm + 1e-12)) for p in params]

    def step(self, closure: Callable[[bool], Tensor], optimizer: torch.optim.Optimizer) -> Tensor:
        rho = self["rho"]
        if rho == 0.0:
            self.last_perturbation_norm = 0.0
            loss = closure(True)
            optimizer.step()
            return loss

        loss = closure(False)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            optimizer.step()
            return loss
        eps = self.perturbation(params, rho)
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
            self.last_perturbation_norm = float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(e) for e in eps])))
        closure(True)
        with torch.no_grad():
            for p, old in zip(params, saved, strict=True):
                p.copy_(old)
        optimizer.step()
        return loss
