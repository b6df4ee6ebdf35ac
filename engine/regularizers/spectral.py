"""Spectral regularization: keep each layer's top singular value near 1 (continual learning)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register

_EPS = 1e-12


def augmented_weight(layer: nn.Module, include_bias: bool) -> Tensor:
    """W̃ = [W | b]: the layer's weight as a matrix (conv kernels flattened to out × in·kh·kw),
    with the bias appended as one extra column when ``include_bias`` and the layer has one."""
    w = layer.weight.flatten(1)
    bias = getattr(layer, "bias", None)
    if include_bias and bias is not None:
        w = torch.cat([w, bias.unsqueeze(1)], dim=1)
    return w


@torch.no_grad()
def power_step_(w: Tensor, u: Tensor, v: Tensor) -> None:
    """One power-iteration step in place on detached u, v: v ← W̃ᵀu/‖W̃ᵀu‖; u ← W̃v/‖W̃v‖."""
    w = w.detach()
    v.copy_(w.T @ u)
    v.div_(v.norm().clamp_min(_EPS))
    u.copy_(w @ v)
    u.div_(u.norm().clamp_min(_EPS))


def spectral_term(sigma: Tensor, k: int) -> Tensor:
    """(σ^k − 1)²: with σ = uᵀW̃v and u, v detached its gradient is 2(σ^k − 1)·kσ^{k−1}·uvᵀ."""
    return (sigma.pow(k) - 1.0).pow(2)


def spectral_layers(model: nn.Module) -> list[nn.Module]:
    """Layers the penalty covers: every ``nn.Linear`` and ``nn.Conv2d``, in registration order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d) and m.weight.requires_grad]


@register
class Spectral(Regularizer):
    """Add λ·Σ_l (σ_max(W̃_l)^k − 1)² so every layer's top singular value stays near 1 (keeps plasticity).

    *Learning Continually by Spectral Regularization* (Lewandowski et al., ICLR 2025):
    W̃_l = [W_l | b_l] is the layer's weight with its bias appended as an
    extra column (``include_bias``; conv kernels are flattened to out × in·kh·kw). σ_max is
    estimated by power iteration with persistent, detached vectors u, v per layer, initialised
    from the technique's own generator: each ``extra_loss`` call first runs ``power_steps``
    steps v ← W̃ᵀu/‖W̃ᵀu‖, u ← W̃v/‖W̃v‖, then uses σ = uᵀW̃v (differentiable in W̃ only), so
    ∂R/∂W̃ = 2(σ^k − 1)·kσ^{k−1}·uvᵀ. Under SAM the closure runs twice, so two power steps are
    taken per update. Covered layers: every ``nn.Linear`` / ``nn.Conv2d`` (raw parameter
    matrices such as a transformer's embeddings or unembedding are not layers and are skipped).
    Verify against the paper: its final version is reported to push bias vectors toward zero
    separately rather than appending them; this follows the lab reference. Cost: two
    matrix-vector products per layer per update, dominated by Python overhead on tiny models.
    """

    name = "spectral"
    group = "continual"
    source = "Learning Continually by Spectral Regularization (Lewandowski et al., ICLR 2025)"
    params = (
        Param("lambda", float, 1e-3, 1e-5, 0.1, live=True, log=True, help="strength λ of λΣ(σ_max^k − 1)²"),
        Param("k", int, 2, 1, 4, help="exponent k on σ_max in (σ_max^k − 1)²"),
        Param("include_bias", bool, True, help="append each layer's bias as an extra column of W"),
        Param("power_steps", int, 1, 1, 20, help="power-iteration steps per update and layer"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.layers = spectral_layers(setup.model)
        self.vectors: list[tuple[Tensor, Tensor]] = []
        for layer in self.layers:
            w = augmented_weight(layer, self["include_bias"])
            u = torch.randn(w.shape[0], generator=self.generator).to(device=w.device, dtype=w.dtype)
            v = torch.randn(w.shape[1], generator=self.generator).to(device=w.device, dtype=w.dtype)
            self.vectors.append((u / u.norm().clamp_min(_EPS), v / v.norm().clamp_min(_EPS)))
        self.sigmas: list[Tensor | None] = [None] * len(self.layers)  # last estimates (detached), for panels

    def estimate(self, steps: int | None = None) -> list[Tensor]:
        """Run the power steps and return σ_l = uᵀW̃_l v for every layer (with grad to W̃_l)."""
        steps = self["power_steps"] if steps is None else steps
        sigmas = []
        for i, (layer, (u, v)) in enumerate(zip(self.layers, self.vectors, strict=True)):
            w = augmented_weight(layer, self["include_bias"])
            for _ in range(steps):
                power_step_(w, u, v)
            sigma = u @ w @ v
            self.sigmas[i] = sigma.detach()
            sigmas.append(sigma)
        return sigmas

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if not self.layers:
            return None
        k = self["k"]
        return self["lambda"] * sum(spectral_term(sigma, k) for sigma in self.estimate())
