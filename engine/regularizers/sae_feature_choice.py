"""Feature Choice SAE activation: every latent picks its top m samples of the batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.regularizers.base import Param, register
from engine.regularizers.sae_topk import SAEActivation, sparsity_conflicts

MOMENTUM = 0.99  # running mean of each latent's inference threshold


def capacity(k: int, batch: int, n_latents: int) -> int:
    """Uniform capacity m = k·B/F, rounded, at least 1 and at most B."""
    return max(1, min(batch, round(k * batch / n_latents)))


def feature_choice_relu(pre: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Per latent (column), keep its m largest pre-activations across the batch, then ReLU.

    Returns (z, the m-th largest pre-activation of every latent). Every latent fires at most m
    times; samples may get any number of latents (including none)."""
    m = min(m, pre.shape[0])
    values, indices = pre.topk(m, dim=0)
    return torch.zeros_like(pre).scatter(0, indices, torch.relu(values)), values[-1]


class FeatureChoiceActivation:
    """Plain callable for ``model.activation``: the batch op in training; in eval mode either
    the batch op or per-latent thresholds θ_j (running mean of each latent's m-th largest value)."""

    def __init__(self, model: nn.Module, k: int, inference: str) -> None:
        self.model, self.k, self.inference = model, k, inference
        self.thresholds: Tensor | None = None  # (F,), set by the first training batch

    def __call__(self, pre: Tensor) -> Tensor:
        if not self.model.training and self.inference == "threshold" and self.thresholds is not None:
            return torch.where(pre > self.thresholds.clamp_min(0.0), pre, torch.zeros_like(pre))
        z, cutoff = feature_choice_relu(pre, capacity(self.k, pre.shape[0], pre.shape[1]))
        if self.model.training and torch.is_grad_enabled():
            with torch.no_grad():
                cutoff = cutoff.detach()
                self.thresholds = cutoff.clone() if self.thresholds is None else torch.lerp(
                    self.thresholds, cutoff, 1.0 - MOMENTUM)
        return z


@register
class SAEFeatureChoice(SAEActivation):
    """Let every latent pick its top m = k·B/F samples of the batch: balanced use, few dead latents, L0 varies.

    *Adaptive Sparse Allocation with Mutual Choice & Feature Choice Sparse Autoencoders*
    (Ayonrinde, 2024). Replaces the SAE's ``activation``: for each latent (column of the B×F
    pre-activation matrix) its m largest entries across the batch are kept, then ReLU, so every
    latent fires at most m times per batch. Capacity is uniform, m = round(k·B/F) clamped to
    [1, B] (the paper's Zipf-distributed capacities are not included — verify against the paper).
    Inference (eval mode): ``threshold`` (default) fires latent j where pre_j > max(θ_j, 0), θ_j a
    running mean (momentum 0.99) of latent j's m-th largest training pre-activation — a lab
    convention mirroring BatchTopK's; ``batch`` applies the batch op to the evaluated chunk.
    ``k`` (the target mean L0) is live.
    """

    name = "sae_feature_choice"
    source = ("Adaptive Sparse Allocation with Mutual Choice & Feature Choice Sparse Autoencoders "
              "(Ayonrinde, 2024)")
    conflicts = sparsity_conflicts("sae_feature_choice")
    params = (
        Param("k", int, 8, 1, 64, live=True, help="target mean active latents per sample; capacity m = k·B/F"),
        Param("inference", str, "threshold", choices=("threshold", "batch"),
              help="eval mode: per-latent thresholds (running means) or the batch op"),
    )

    def make_activation(self) -> FeatureChoiceActivation:
        return FeatureChoiceActivation(self.model, self["k"], self["inference"])

    def sync(self) -> None:
        self.activation.k = self["k"]
