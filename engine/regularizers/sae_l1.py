"""L1 sparse autoencoder: ReLU latents and a decoder-norm-weighted L1 penalty."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import LossContext, Param, Regularizer, Setup, register
from engine.regularizers.sae_topk import SAE_ONLY, sae_model


def sae_l1_penalty(z: Tensor, decoder_weight: Tensor) -> Tensor:
    """mean_b Σ_i |z_bi|·‖W_dec[:, i]‖: invariant to scaling a decoder column up and its latent down."""
    return (z.abs() * decoder_weight.norm(dim=0)).sum(dim=-1).mean()


@register
class SAEL1(Regularizer):
    """Add λ·mean_b Σ_i |z_i|·‖W_dec[:, i]‖ on ReLU latents: the classic L1 sparse autoencoder baseline.

    *Towards Monosemanticity: Decomposing Language Models With Dictionary Learning* (Bricken et
    al., 2023) and the L1 baseline of *Scaling and evaluating sparse autoencoders* (Gao et al.,
    2024). The activation is ReLU (installed explicitly as
    ``model.activation``); the penalty weights each latent by its decoder column's norm, so
    scaling a column up by c and its latent down by c changes neither the reconstruction nor
    the penalty (the lab's SAE keeps columns at unit norm anyway, so it equals λ·mean‖z‖₁
    there). Averaged over the batch like the data loss. Tune λ to a target L0 (≈ 1e-3–1e-1
    depending on the input scale); shrinkage biases activations low, which TopK avoids. The
    latents (with their graph) are captured by a forward pre-hook on the decoder during the
    training forward; if none was captured, ``model.features(batch.x)`` is recomputed. One SAE
    sparsity mechanism at a time.
    """

    name = "sae_l1"
    group = "sae"
    requires = (SAE_ONLY,)
    source = ("Towards Monosemanticity: Decomposing Language Models With Dictionary Learning (Bricken et al., "
              "2023); Scaling and evaluating sparse autoencoders (Gao et al., 2024)")
    exclusive = "sae_sparsity"  # one mechanism decides how the latents become sparse
    params = (
        Param("lambda", float, 1e-2, 0.0, 1.0, live=True, log=True,
              help="strength λ of λ·Σ|z_i|·‖W_dec,i‖ (tune to a target L0)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.model = sae_model(setup, self.name)
        self.model.activation = torch.relu
        self._z: Tensor | None = None
        self.handle = self.model.decoder.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if self.model.training and torch.is_grad_enabled():
            self._z = inputs[0]

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        z, self._z = self._z, None
        if z is None:
            z = self.model.features(ctx.batch.x)
        return self["lambda"] * sae_l1_penalty(z, self.model.decoder.weight)
