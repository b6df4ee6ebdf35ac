"""Feature Choice SAE activation: every latent picks its top m samples of the batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.regularizers.base import Param, register
from engine.regularizers.sae_topk import SAEActivation

MOMENTUM = 0.99  # running mean of each latent's inference threshold


def capacity(k: int, batch: int, n_latents: int) -> int:
    """Uniform capacity m = k·B/F, rounded, at least 1 and at most B."""
    return max(1, min(batch, round(k * batch / n_latents)))


def zipf_capacities(k: int, batch: int, n_latents: int, exponent: float) -> Tensor:
    """Capacities m_j ∝ 1/j^s (j = 1..F, latent j − 1 gets the j-th), integers in [1, B] summing
    to k·B (capped to [F, F·B], the sums such integers can reach).

    Largest-remainder rounding of the real targets k·B·p_j; capacity freed by the cap at B goes
    to the latents with the largest remainders, one unit per pass."""
    total = min(max(k * batch, n_latents), n_latents * batch)
    weights = torch.arange(1, n_latents + 1, dtype=torch.float64).pow(-exponent)
    target = total * weights / weights.sum()
    m = target.floor().clamp(1, batch).long()
    while (left := total - int(m.sum())) != 0:
        if left > 0:  # hand out units to the largest remainders among latents below B
            room = (m < batch).nonzero(as_tuple=True)[0]
            order = room[torch.argsort(target[room] - m[room], descending=True, stable=True)][:left]
            m[order] += 1
        else:  # the floor of 1 overshot: take units from the largest remainder deficits above 1
            room = (m > 1).nonzero(as_tuple=True)[0]
            order = room[torch.argsort(m[room] - target[room], descending=True, stable=True)][:-left]
            m[order] -= 1
    return m


def feature_choice_relu(pre: Tensor, m: int | Tensor) -> tuple[Tensor, Tensor]:
    """Per latent (column), keep its m largest pre-activations across the batch, then ReLU.

    ``m``: one capacity for all latents, or one per latent (F,). Returns (z, each latent's m-th
    largest pre-activation). Every latent j fires at most m_j times; samples may get any number
    of latents (including none)."""
    if isinstance(m, int):
        m = min(m, pre.shape[0])
        values, indices = pre.topk(m, dim=0)
        return torch.zeros_like(pre).scatter(0, indices, torch.relu(values)), values[-1]
    m = m.to(pre.device).clamp(1, pre.shape[0])
    values, indices = pre.topk(int(m.max()), dim=0)
    keep = torch.arange(values.shape[0], device=pre.device).unsqueeze(1) < m.unsqueeze(0)
    z = torch.zeros_like(pre).scatter(0, indices, torch.relu(values) * keep)
    return z, values.gather(0, (m - 1).unsqueeze(0)).squeeze(0)


class FeatureChoiceActivation:
    """Plain callable for ``model.activation``: the batch op in training; in eval mode either
    the batch op or per-latent thresholds θ_j (running mean of each latent's m-th largest value)."""

    def __init__(self, model: nn.Module, k: int, inference: str, zipf_exponent: float | None = None) -> None:
        self.model, self.k, self.inference = model, k, inference
        self.zipf_exponent = zipf_exponent  # None: uniform capacity
        self.thresholds: Tensor | None = None  # (F,), set by the first training batch
        self._capacities: dict[tuple[int, int, int], Tensor] = {}

    def capacities(self, batch: int, n_latents: int) -> int | Tensor:
        """m (uniform) or the per-latent Zipf capacities for this k and batch size (cached)."""
        if self.zipf_exponent is None:
            return capacity(self.k, batch, n_latents)
        key = (self.k, batch, n_latents)
        if key not in self._capacities:
            self._capacities[key] = zipf_capacities(self.k, batch, n_latents, self.zipf_exponent)
        return self._capacities[key]

    def __call__(self, pre: Tensor) -> Tensor:
        if not self.model.training and self.inference == "threshold" and self.thresholds is not None:
            return torch.where(pre > self.thresholds.clamp_min(0.0), pre, torch.zeros_like(pre))
        z, cutoff = feature_choice_relu(pre, self.capacities(pre.shape[0], pre.shape[1]))
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
    params = (
        Param("k", int, 8, 1, 64, live=True, help="target mean active latents per sample; capacity m = k·B/F"),
        Param("inference", str, "threshold", choices=("threshold", "batch"),
              help="eval mode: per-latent thresholds (running means) or the batch op"),
        Param("capacity", str, "uniform", choices=("uniform", "zipf"),
              help="per-latent capacity: uniform m = k·B/F, or Zipf m_j ∝ 1/j^s summing to k·B"),
        Param("exponent", float, 1.0, 0.0, 3.0, help="Zipf exponent s of the capacities (capacity=zipf only)"),
    )

    def make_activation(self) -> FeatureChoiceActivation:
        exponent = self["exponent"] if self["capacity"] == "zipf" else None
        return FeatureChoiceActivation(self.model, self["k"], self["inference"], exponent)

    def sync(self) -> None:
        self.activation.k = self["k"]
