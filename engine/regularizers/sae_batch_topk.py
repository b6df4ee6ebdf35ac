"""BatchTopK SAE activation: the k·B largest pre-activations of the whole batch survive."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.regularizers.base import Param, register
from engine.regularizers.sae_topk import SAEActivation

MOMENTUM = 0.99  # running mean of the inference threshold: θ ← 0.99·θ + 0.01·(smallest selected)


def batch_topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the k·B largest entries of the B×F matrix (then ReLU); exactly k·B nonzeros when at
    least k·B entries are positive. Per-sample L0 varies; its mean is k."""
    flat = pre.reshape(-1)
    n = min(k * pre.shape[0], flat.numel())
    values, indices = flat.topk(n)
    return torch.zeros_like(flat).scatter(0, indices, torch.relu(values)).view_as(pre)


def smallest_selected(z: Tensor) -> Tensor | None:
    """The smallest positive selected activation of a batch (None if nothing fired)."""
    positive = z[z > 0]
    return positive.min() if positive.numel() else None


class BatchTopKActivation:
    """Plain callable for ``model.activation``: batch op in training; in eval mode either the same
    batch op or the threshold θ (running mean of the smallest selected activation)."""

    def __init__(self, model: nn.Module, k: int, inference: str) -> None:
        self.model, self.k, self.inference = model, k, inference
        self.threshold: Tensor | None = None  # scalar θ, set by the first training batch

    def __call__(self, pre: Tensor) -> Tensor:
        if not self.model.training and self.inference == "threshold" and self.threshold is not None:
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))
        z = batch_topk_relu(pre, self.k)
        if self.model.training and torch.is_grad_enabled():
            with torch.no_grad():
                low = smallest_selected(z.detach())
                if low is not None:
                    self.threshold = low.clone() if self.threshold is None else torch.lerp(
                        self.threshold, low, 1.0 - MOMENTUM)
        return z


@register
class SAEBatchTopK(SAEActivation):
    """Keep the k·B largest pre-activations of the whole batch (ReLU): mean L0 = k, varying per sample.

    *BatchTopK Sparse Autoencoders* (Bussmann, Leask & Nanda, 2024); the same allocation is the
    Mutual Choice SAE of *Adaptive Sparse Allocation with Mutual Choice & Feature Choice Sparse
    Autoencoders* (Ayonrinde, 2024). Replaces the SAE's ``activation``: over the B×F
    pre-activation matrix the global top k·B entries are kept (then ReLU) and every other latent
    is exactly 0, so a batch has exactly k·B nonzeros when enough are positive. Training outputs
    depend on the rest of the batch. Inference (eval mode: evaluation and the diagnostics):
    ``threshold`` (default) fires latent j where pre_j > θ, θ a running mean (momentum 0.99) of
    the smallest selected activation of each training batch, standard BatchTopK practice —
    verify against the paper; before the first training batch, and with ``batch``, the batch op
    is used. θ is updated by every training-mode forward with grad enabled (twice per update
    under SAM, whose closure runs the forward twice). ``k`` is live.
    """

    name = "sae_batch_topk"
    source = ("BatchTopK Sparse Autoencoders (Bussmann et al., 2024); Adaptive Sparse Allocation with Mutual "
              "Choice & Feature Choice Sparse Autoencoders (Ayonrinde, 2024)")
    params = (
        Param("k", int, 8, 1, 64, live=True, help="mean active latents per sample (k·B per batch)"),
        Param("inference", str, "threshold", choices=("threshold", "batch"),
              help="eval mode: threshold θ (running mean of the smallest selected value) or the batch op"),
    )

    def make_activation(self) -> BatchTopKActivation:
        return BatchTopKActivation(self.model, self["k"], self["inference"])

    def sync(self) -> None:
        self.activation.k = self["k"]
