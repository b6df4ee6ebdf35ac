"""TrAct: train the first layer as if its pre-activations were embeddings (input-whitened gradient)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.regularizers.base import Need, Param, Regularizer, Setup, register


def tract_weight_grad(grad_out: Tensor, x: Tensor, lam: float) -> Tensor:
    """Gᵀ X (XᵀX/b + λI)⁻¹ for G = ∂L/∂z (b × out) and the layer input X (b × in)."""
    b, d = x.shape
    gram = x.T @ x / b + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.T @ grad_out).T  # gram is symmetric: (M⁻¹XᵀG)ᵀ = GᵀXM⁻¹


class _TrActLinear(torch.autograd.Function):
    """z = x Wᵀ + b, with the weight gradient of TrAct; input and bias gradients as usual."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, lam: float) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.lam, ctx.has_bias = lam, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_w = tract_weight_grad(grad_out, x, ctx.lam) if ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


@register
class TrAct(Regularizer):
    """Precondition the first layer's weight gradient by (XᵀX/b + λI)⁻¹ so its pre-activations train like embeddings.

    *TrAct: Making First-layer Pre-Activations Trainable* (Petersen, Borgelt & Ermon, NeurIPS
    2024). For the first layer z = XWᵀ + b with G = ∂L/∂z:

        plain:  ∇_W = GᵀX          TrAct:  ∇_W ← GᵀX (XᵀX/b + λI)⁻¹      (b = batch rows, λ 0.1)

    The weight update is then the least-squares fit (ridge λ) of a gradient step taken on the
    pre-activations themselves, so bright/high-contrast inputs no longer dominate the first
    layer and badly scaled inputs stop slowing it down. Implemented as a custom autograd
    function swapped in by a forward hook on the first ``nn.Linear`` (which must read the raw
    inputs: ``model.name`` mlp or quadratic_mlp): only the gradient that reaches W *through the
    forward pass* is transformed — the input and bias gradients are unchanged, and penalties
    applied directly to W (L2, L1) are not preconditioned, as in the paper's implementation.
    Training mode only: in eval mode (diagnostics, curvature) the layer is the plain linear map.
    Any optimizer.
    """

    name = "tract"
    group = "optimizer"
    requires = (
        Need(why="it rewrites the gradient of a first linear layer on the raw inputs",
             fix="use a model with one (e.g. model.name=mlp)", model_traits=frozenset({"first_layer_linear"})),
    )
    source = "TrAct: Making First-layer Pre-Activations Trainable (Petersen, Borgelt & Ermon, 2024)"
    params = (
        Param("lambda", float, 0.1, 1e-3, 10.0, live=True, log=True,
              help="ridge λ of (XᵀX/b + λI)⁻¹; large λ → the plain gradient / λ"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        layer = next((m for m in setup.model.modules() if isinstance(m, nn.Linear)), None)
        if layer is None:
            raise ValueError(f"regularizers.tract: model {type(setup.model).__name__} has no linear layer")
        self.layer = layer
        self.handle = layer.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if not module.training or not torch.is_grad_enabled():
            return None
        x = inputs[0]
        if x.dim() != 2:
            return None
        return _TrActLinear.apply(x, module.weight, module.bias, self["lambda"])
