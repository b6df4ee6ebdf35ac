"""Center loss: pull each penultimate feature toward an EMA centre of its class."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers._common import class_count
from engine.regularizers._features import PenultimateFeatures
from engine.regularizers.base import Batch, LossContext, Param, Regularizer, Setup, register


def labelled_rows(batch: Batch) -> Tensor:
    """Rows whose label may be trained on (all rows unless ``batch.labeled`` marks some)."""
    if batch.labeled is None:
        return torch.arange(batch.x.shape[0], device=batch.x.device)
    return batch.labeled.bool().nonzero(as_tuple=True)[0]


def center_loss_value(z: Tensor, y: Tensor, centers: Tensor) -> Tensor:
    """½·mean_b ‖z_b − c_{y_b}‖² (squared norm over features, mean over the batch)."""
    return 0.5 * (z - centers[y]).pow(2).sum(dim=1).mean()


@torch.no_grad()
def ema_update(centers: Tensor, z: Tensor, y: Tensor, alpha: float) -> None:
    """c_j ← (1 − α)·c_j + α·mean{z_b : y_b = j} for every class j present in the batch (in place)."""
    num = centers.shape[0]
    sums = torch.zeros_like(centers).index_add_(0, y, z.to(centers.dtype))
    counts = torch.bincount(y, minlength=num).to(centers.dtype)
    present = counts > 0
    means = sums[present] / counts[present].unsqueeze(1)
    centers[present] = (1.0 - alpha) * centers[present] + alpha * means


@register
class CenterLoss(Regularizer):
    """Add λ·½·mean ‖f_i − c_{y_i}‖² on the penultimate features, with class centres c tracked by EMA.

    *A Discriminative Feature Learning Approach for Deep Face Recognition* (Wen et al., ECCV
    2016). Conventions:

    * Loss ½·mean_b ‖f_b − c_{y_b}‖² — the paper's ½Σ, averaged over the batch so λ does not
      scale with the batch size. Only labelled rows take part (``Batch.labeled``).
    * Centres: a C × d buffer, zeros at the start (the paper's are learned from random); after the
      loss is computed, c_j ← (1 − α)c_j + α·mean{f_b : y_b = j} for each class j in the batch,
      from detached features (an EMA; the paper's Δc_j rule with α is the same idea, with a
      1 + n_j denominator). The loss uses the centres *before* this update, so its gradient
      w.r.t. f_b is λ(f_b − c_{y_b})/B and the centres receive no gradient.
    * Features: the penultimate features as VICReg gets them (dropout-slot hook, else one extra
      ``model.features`` forward). Mixed batches (mixup) use the unmixed labels ``y``.
    """

    name = "center_loss"
    group = "repr"
    source = "A Discriminative Feature Learning Approach for Deep Face Recognition (Wen et al., 2016)"
    tasks = ("classification",)
    params = (
        Param("lambda", float, 0.01, 1e-4, 1.0, live=True, log=True, help="strength λ of the centre loss"),
        Param("alpha", float, 0.5, 0.0, 1.0, live=True, help="EMA rate α of the class-centre update (0 = frozen)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)
        self.features = PenultimateFeatures(setup.model, getattr(setup.dataset, "x_train", None))
        self.centers: Tensor | None = None  # C × d, built on the first batch (d known then)

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        z = self.features(ctx).flatten(1)
        rows = labelled_rows(ctx.batch)
        if rows.numel() == 0:
            return None
        z, y = z[rows], ctx.batch.y[rows].long()
        if self.centers is None:
            self.centers = torch.zeros(self.num_classes, z.shape[1], dtype=z.dtype, device=z.device)
        loss = center_loss_value(z, y, self.centers)
        ema_update(self.centers, z.detach(), y, self["alpha"])
        return self["lambda"] * loss
