"""Decoupled weight decay applied after any optimizer's step."""

from __future__ import annotations

from typing import Any

import torch

from engine.regularizers.base import Param, Regularizer, Setup, register, weight_matrices


@register
class WeightDecay(Regularizer):
    """Shrink weights by θ ← θ·(1 − η·λ) after every step, outside the loss (decoupled decay).

    *Decoupled Weight Decay Regularization* (Loshchilov & Hutter, 2019). The per-step shrink is
    η·λ with η = the current learning rate (``setup.lr()``), which is the AdamW convention of
    PyTorch: λ here equals AdamW's ``weight_decay``. This lets SGD, Adam or Lion get decoupled
    decay too. For AdamW/Lion ``optim.weight_decay`` does the same inside the optimizer; for
    SGD/Adam ``optim.weight_decay`` is *coupled* L2 (torch adds λθ to the gradient).

    Convention: applied in ``after_step``, i.e. after the optimizer's update rather than before
    it as AdamW does; the two differ by O(η²λ) per step. Decoupled decay is in no loss, so it
    does not shift Hessian eigenvalues. Weights only (dim ≥ 2) unless ``include_bias``.
    """

    name = "weight_decay"
    group = "norm"
    source = "Decoupled Weight Decay Regularization (Loshchilov & Hutter, 2019)"
    params = (
        Param("lambda", float, 1e-2, 0.0, 10.0, live=True, log=True, help="decay λ; per-step shrink is lr·λ"),
        Param("include_bias", bool, False, help="also decay biases and other 1-D parameters"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self._params = list(weight_matrices(setup.model, self["include_bias"]))

    def after_step(self, step: int) -> None:
        factor = 1.0 - self.setup.lr() * self["lambda"]
        if factor == 1.0:
            return
        with torch.no_grad():
            for p in self._params:
                p.mul_(factor)
