"""Output scale α: train f(x) = α·(f_θ(x) − f_θ₀(x)), lazy (large α) vs rich (small α) dynamics."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import Need, Param, Regularizer, Setup, register


@register
class OutputScale(Regularizer):
    """Train f(x) = α·(f_θ(x) − f_θ₀(x)); large α = lazy (long grokking delay), small α = rich. Scale lr by 1/α².

    *Grokking as the Transition from Lazy to Rich Training Dynamics* (Kumar et al., 2024)
    (extended, not calibrated). θ₀ is a frozen deep copy of the model taken when
    the technique is built (right after init), kept in eval mode (no dropout) and outside the
    model's parameters, so neither the optimizer nor the weight metrics see it. The model's output
    is replaced by a forward hook on the model, so every ``model(x)`` call (training, evaluation,
    other techniques' extra forwards) sees f; ``forward_with_features`` is overridden on the
    instance to return the same scaled output. Features (``model.features``) are those of f_θ,
    unscaled. At init f ≡ 0 (uniform softmax).

    The paper also divides the loss by α². The trainer's data loss cannot be rescaled from a
    technique (``extra_loss`` only adds terms), so **set ``optim.lr`` to lr/α² yourself** — the
    same thing for plain SGD; for Adam-type optimizers (scale-invariant in the gradient) neither
    is needed in the same way, verify against the paper. With lr/α², ‖θ_t − θ₀‖/‖θ₀‖ → 0 as α
    grows (lazy / NTK regime). Not for the sae (its decoder renormalisation breaks θ₀ − θ
    centring).
    """

    name = "output_scale"
    group = "grokking"
    requires = (
        Need(why="it trains f_θ − f_θ₀, which is not a centred model when the decoder is renormalised every "
                 "step",
             fix="use another model or disable output_scale", model_lacks=frozenset({"sae_latents"})),
    )
    source = "Grokking as the Transition from Lazy to Rich Training Dynamics (Kumar et al., 2024)"
    params = (
        Param("alpha", float, 1.0, 0.01, 1000.0, log=True,
              help="output scale α in α·(f_θ − f_θ₀); scale optim.lr by 1/α² yourself"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        model = setup.model
        reference = copy.deepcopy(model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        for m in reference.modules():  # other techniques' hooks were copied too: θ₀ is the bare model
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        self.reference = reference  # not a submodule of the model: stays out of the optimizer
        self.handle = model.register_forward_hook(self._hook)
        if hasattr(model, "forward_with_features"):
            model.forward_with_features = self._forward_with_features  # type: ignore[method-assign]

    def scale(self, output: Tensor, x: Tensor) -> Tensor:
        """α·(f_θ(x) − f_θ₀(x)) given f_θ(x)."""
        with torch.no_grad():
            base = self.reference(x)
        return self["alpha"] * (output - base)

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        return self.scale(output, inputs[0])

    def _forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        model = self.setup.model
        h = model.features(x)
        return self.scale(model.head(h), x), h
