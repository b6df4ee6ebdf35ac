"""Sparse autoencoder (``techniques.md`` §11, ``phenomena.md`` §12), after Gao et al. 2024,
*Scaling and evaluating sparse autoencoders*:

    pre = W_enc (x − b_dec) + b_enc      encode_pre(x)
    z   = activation(pre)                features(x)   (ReLU; TopK etc. replace ``activation``)
    x̂   = W_dec z + b_dec                head(z)

``decoder.weight`` has shape (d, n_latents): **column** j is latent j's dictionary direction, and
the columns are kept at unit norm (``normalize_decoder_``; the trainer calls it after every step,
after ``project_decoder_grad_`` removed the gradient component parallel to each column), so a
latent's magnitude lives in z, not in the decoder.

Init: decoder columns are random unit vectors; the encoder is *tied*, W_enc = W_decᵀ, as in Gao
et al. (it reduced dead latents: 0.827 tied vs 0.906 untied in §12); b_enc = b_dec = 0 (the inputs
are mean-centred, standing in for Gao's geometric-median b_dec). Setting ``model.init_std`` gives
the *untied* variant instead: W_enc ~ N(0, init_std²) independent of the decoder. ``model.init_scale``
multiplies the encoder weights (never the decoder, whose norm is fixed at 1). ``model.bias`` is
ignored: both biases are part of the architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.models import LabModel, ModelFamily, register_model
from engine.models.mlp import flat_dim

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.data import Dataset

_EPS = 1e-12


class SparseAutoencoder(LabModel):
    """d → n_latents → d autoencoder with a pre-encoder bias and unit-norm decoder columns.

    ``activation`` is a plain callable attribute (default ``torch.relu``); the SAE activation
    techniques replace it, e.g. ``model.activation = lambda pre: topk_relu(pre, k)``. Assign plain
    callables: once an ``nn.Module`` is assigned, torch registers it as a submodule and refuses a
    later non-module assignment.
    """

    def __init__(self, d: int, n_latents: int, tied: bool = True) -> None:
        super().__init__()
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.encoder = nn.Linear(d, n_latents, bias=True)
        self.decoder = nn.Linear(n_latents, d, bias=False)
        self.activation: Callable[[Tensor], Tensor] = torch.relu
        with torch.no_grad():
            self.decoder.weight.copy_(torch.randn(d, n_latents))
            self.normalize_decoder_()
            if tied:
                self.encoder.weight.copy_(self.decoder.weight.T)
            nn.init.zeros_(self.encoder.bias)

    def encode_pre(self, x: Tensor) -> Tensor:
        """Pre-activation latents W_enc (x − b_dec) + b_enc, (batch, n_latents)."""
        return self.encoder(x.flatten(1) - self.b_dec)

    def features(self, x: Tensor) -> Tensor:
        return self.activation(self.encode_pre(x))

    def head(self, h: Tensor) -> Tensor:
        return self.decoder(h) + self.b_dec

    def before_optimizer_step(self) -> None:
        self.project_decoder_grad_()

    def after_optimizer_step(self) -> None:
        self.normalize_decoder_()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder column (one per latent) to unit L2 norm, in place."""
        w = self.decoder.weight
        w.div_(w.norm(dim=0, keepdim=True).clamp_min(_EPS))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove from ∇W_dec the component parallel to each (unit) decoder column, in place.

        Call between ``backward`` and the optimizer step, then ``normalize_decoder_`` after it
        (Gao et al. 2024): the step then only rotates columns instead of fighting the renormalisation.
        """
        w, g = self.decoder.weight, self.decoder.weight.grad
        if g is not None:
            g.sub_((g * w).sum(dim=0, keepdim=True) * w)


@register_model
class SAEModel(ModelFamily):
    """Sparse autoencoder reconstructing its inputs through non-negative latents."""

    name = "sae"
    tasks = frozenset({"reconstruction"})
    inputs = frozenset({"vector"})
    traits = frozenset({"sae_latents", "own_activation"})

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        return build_sae(cfg, dataset)


def build_sae(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """``model.width`` = number of latents; ``model.depth``/``activation``/``heads`` are ignored."""
    d = flat_dim(dataset)
    if dataset.output_dim != d:
        raise ValueError(f"model.name: the sae reconstructs its input; targets have {dataset.output_dim} "
                         f"dims but inputs {d}")
    if cfg.dropout > 0:
        raise ValueError("model.dropout: the sae has no dropout slots; set model.dropout=0")
    model = SparseAutoencoder(d, cfg.width, tied=cfg.init_std is None)
    with torch.no_grad():
        if cfg.init_std is not None:
            nn.init.normal_(model.encoder.weight, 0.0, cfg.init_std)
        model.encoder.weight.mul_(cfg.init_scale)
    return model.float()
