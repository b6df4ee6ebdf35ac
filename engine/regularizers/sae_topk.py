"""TopK SAE activation, plus what the SAE techniques share (model check, the base class)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import Need, Param, Regularizer, Setup, register

# Every SAE technique acts on the latents of a sparse autoencoder.
SAE_ONLY = Need(why="it acts on a sparse autoencoder's latents",
                fix="enable it on a sparse-autoencoder run (e.g. model.name=sae, data.name=sparse_features)",
                model_traits=frozenset({"sae_latents"}))


def sae_model(setup: Setup, name: str) -> nn.Module:
    """The run's model, checked to be an SAE (``encode_pre``, ``decoder``, ``activation``)."""
    model = setup.model
    if not all(hasattr(model, attr) for attr in ("encode_pre", "decoder", "activation")):
        raise ValueError(f"regularizers.{name}: needs model.name=sae (got {type(model).__name__})")
    return model


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """ReLU(TopK_k(pre)) per row: the k largest pre-activations of each sample, then ReLU; the rest 0.

    Exactly k nonzeros per row when at least k entries are positive, fewer otherwise."""
    k = min(k, pre.shape[-1])
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


class TopKActivation:
    """The plain callable installed as ``model.activation`` (not an nn.Module, see models/sae.py)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.k)


class SAEActivation(Regularizer):
    """Base of the SAE activation techniques: install ``self.activation`` as ``model.activation``.

    Subclasses build ``self.activation`` in ``make_activation`` and push live changes into it in
    ``sync``. Not registered itself.
    """

    group = "sae"
    requires = (SAE_ONLY,)
    exclusive = "sae_sparsity"  # one mechanism decides how the latents become sparse

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.model = sae_model(setup, self.name)
        self.activation = self.make_activation()
        self.model.activation = self.activation

    def make_activation(self) -> Any:
        raise NotImplementedError

    def sync(self) -> None:
        """Copy live parameter values into the installed activation."""

    def set(self, key: str, value: Any) -> None:
        super().set(key, value)
        self.sync()


@register
class SAETopK(SAEActivation):
    """Keep only each sample's k largest latents, z = ReLU(TopK_k(pre)): exactly k active latents per sample.

    *Scaling and evaluating sparse autoencoders* (Gao et al., 2024); reframed in *Adaptive Sparse
    Allocation with Mutual Choice & Feature Choice Sparse Autoencoders* (Ayonrinde, 2024). Replaces
    the SAE's ``activation`` with a plain callable at build time: the k largest pre-activations
    of each row are kept (then ReLU), every other latent is exactly 0 — so L0 = k, or fewer when
    a row has fewer than k positive pre-activations. The same op is used in training and
    evaluation (it is per-sample). Gradients reach only the selected latents. ``k`` is live.
    One SAE sparsity mechanism at a time (TopK, BatchTopK, Feature Choice, L1); combine with
    ``sae_aux_k`` against dead latents.
    """

    name = "sae_topk"
    source = "Scaling and evaluating sparse autoencoders (Gao et al., 2024)"
    params = (
        Param("k", int, 8, 1, 64, live=True, help="active latents per sample"),
    )

    def make_activation(self) -> TopKActivation:
        return TopKActivation(self["k"])

    def sync(self) -> None:
        self.activation.k = self["k"]
