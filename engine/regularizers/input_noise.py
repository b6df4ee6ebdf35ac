"""Gaussian input noise: train on x + σε, a fresh ε ~ N(0, I) every step."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from engine.regularizers.base import Batch, Need, Param, Regularizer, Setup, register


@register
class InputNoise(Regularizer):
    """Add Gaussian noise σ·ε to every training input, smoothing the function near the data.

    Classical noise injection (Bishop, *Training with Noise is Equivalent to Tikhonov
    Regularization*, 1995):

        x̃ = x + σ·ε,   ε ~ N(0, I)

    σ is in the units of the (standardised) inputs, so it means the same on every dataset only
    because the lab standardises first (digits: /16 then centred). Runs first in
    ``transform_batch`` (order 10), before any mixing. Training only: evaluation, diagnostics
    and memorisation metrics see clean inputs. ε is drawn on the CPU from the technique's own
    generator and moved to the device, so the data order, the init and every other technique's
    noise are unchanged; σ = 0 passes the batch through untouched (bit-identical to off).
    Float inputs only (token inputs cannot be perturbed).
    """

    name = "input_noise"
    group = "noise"
    requires = (
        Need(why="it adds Gaussian noise to the inputs",
             fix="use data.encoding=onehot or disable input_noise", inputs_not=frozenset({"tokens"})),
    )
    source = "Training with Noise is Equivalent to Tikhonov Regularization (Bishop, 1995)"
    order = 10
    params = (
        Param("sigma", float, 0.1, 0.0, 1.0, live=True, help="noise std σ, in standardised input units"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        x_train = getattr(setup.dataset, "x_train", None)
        if x_train is not None and not torch.is_floating_point(x_train):
            raise ValueError("regularizers.input_noise: inputs are integer tokens and cannot carry Gaussian noise; "
                             "use data.encoding=onehot or disable input_noise")

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        sigma = self["sigma"]
        if sigma == 0.0:
            return batch
        noise = torch.randn(batch.x.shape, generator=self.generator, dtype=batch.x.dtype)
        return replace(batch, x=batch.x + sigma * noise.to(batch.x.device))
