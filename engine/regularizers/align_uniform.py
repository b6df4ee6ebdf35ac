"""Alignment and uniformity losses on the hypersphere, with a Gaussian-noise view as positive pair."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from engine.regularizers._features import PenultimateFeatures
from engine.regularizers._ssl import gaussian_view, private_rng
from engine.regularizers.base import LossContext, Need, Param, Regularizer, Setup, register


def align_loss(z: Tensor, z_pos: Tensor, alpha: float = 2.0) -> Tensor:
    """L_align = mean_b ‖z_b − z⁺_b‖₂^α (z, z⁺ already on the unit sphere)."""
    squared = (z - z_pos).pow(2).sum(dim=1)
    return (squared if alpha == 2.0 else squared.clamp_min(1e-12).pow(alpha / 2)).mean()


def uniform_loss(z: Tensor, t: float = 2.0) -> Tensor:
    """L_uniform = log mean_{i<j} exp(−t‖z_i − z_j‖²) over distinct pairs (z on the unit sphere)."""
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    squared = (z[i] - z[j]).pow(2).sum(dim=1)
    return squared.mul(-t).exp().mean().log()


@register
class AlignUniform(Regularizer):
    """Add w·(L_align + λ·L_uniform) on L2-normalised penultimate features; positives are noisy views.

    *Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere* (Wang & Isola, ICML 2020), used as an auxiliary loss
    next to the data loss. On z = f/‖f‖ (penultimate features, flattened):

        L_align   = mean_b ‖z_b − z⁺_b‖^α                 (α = 2)
        L_uniform = log mean_{i<j} exp(−t‖z_i − z_j‖²)     (t = 2; pairs within the batch)

    The positive z⁺_b is the features of x_b + σε (ε from the technique's own generator; one extra
    ``model.features`` forward per update, under a private RNG so dropout there does not shift the
    run's stream) — a stand-in for the paper's image augmentations. Batches of one row skip the
    uniformity term. Refused for integer token inputs (no noisy view).
    """

    name = "align_uniform"
    group = "repr"
    requires = (
        Need(why="it draws noisy positive views of the inputs",
             fix="use data.encoding=onehot or disable align_uniform", inputs_not=frozenset({"tokens"})),
        Need(why="its uniformity term spreads the features on a sphere, while sparse-autoencoder latents are "
                 "meant to be sparse",
             fix="disable align_uniform or use another model", model_lacks=frozenset({"sae_latents"})),
    )
    source = ("Understanding Contrastive Representation Learning through Alignment and Uniformity on the "
              "Hypersphere (Wang & Isola, 2020)")
    params = (
        Param("w", float, 0.1, 0.0, 10.0, live=True, help="overall weight w of L_align + λ·L_uniform"),
        Param("lam", float, 1.0, 0.0, 10.0, live=True, help="weight λ of the uniformity term"),
        Param("alpha", float, 2.0, 1.0, 4.0, help="exponent α of the alignment distance"),
        Param("t", float, 2.0, 0.1, 10.0, help="temperature t of the uniformity Gaussian kernel"),
        Param("sigma", float, 0.1, 0.0, 2.0, live=True, help="std σ of the Gaussian noise making the positive view"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        x_train = getattr(setup.dataset, "x_train", None)
        if x_train is not None and not torch.is_floating_point(x_train):
            raise ValueError("regularizers.align_uniform: inputs are integer tokens and cannot take a noisy view; "
                             "use data.encoding=onehot or disable it")
        self.features = PenultimateFeatures(setup.model, x_train)
        self.last_terms: tuple[float, float] | None = None  # (L_align, L_uniform) of the latest batch, for tests

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        z = F.normalize(self.features(ctx).flatten(1), dim=1)
        with private_rng(self.generator, ctx.logits.device):
            z_pos = F.normalize(ctx.model.features(gaussian_view(ctx.batch.x, self["sigma"], self.generator))
                                .flatten(1), dim=1)
        loss = align_loss(z, z_pos, self["alpha"])
        uniform = uniform_loss(z, self["t"]) if z.shape[0] >= 2 else torch.zeros((), device=z.device)
        self.last_terms = (float(loss.detach()), float(uniform.detach()))
        return self["w"] * (loss + self["lam"] * uniform)
