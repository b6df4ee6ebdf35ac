"""Trained Rank Pruning: every m updates, replace each weight matrix by its low-rank SVD truncation."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.regularizers.base import Param, Regularizer, Setup, register
from engine.regularizers.nuclear_norm import covered_layers


def energy_rank(s: Tensor, energy: float) -> int:
    """Smallest k with Σ_{i≤k} σ_i² ≥ e·Σ_i σ_i² (σ sorted descending; at least 1)."""
    cumulative = torch.cumsum(s.pow(2), 0)
    return max(1, int((cumulative < energy * cumulative[-1]).sum()) + 1) if len(s) else 0


@torch.no_grad()
def truncate(w: Tensor, energy: float) -> tuple[Tensor, int]:
    """(U_k diag σ_k V_kᵀ, k) for the energy rank k of ``w`` (conv kernels flattened to out × rest)."""
    u, s, vh = torch.linalg.svd(w.flatten(1), full_matrices=False)
    k = min(energy_rank(s, energy), len(s))
    return ((u[:, :k] * s[:k]) @ vh[:k]).reshape(w.shape), k


@register
class TrainedRankPruning(Regularizer):
    """Every `every` updates, replace each weight matrix W by its SVD truncation keeping a fraction e of Σσ².

    *Trained Rank Pruning for Efficient Deep Neural Networks* (Xu et al., 2019):
    training alternates ordinary updates with a substitution W ← U_k Σ_k V_kᵀ, k the energy rank
    (smallest k with Σ_{i≤k}σ_i² ≥ e·Σσ_i², as the ``energy rank`` of diagnostics.md), so the
    network learns to live in low rank and a final truncation costs little accuracy; pair it with
    ``nuclear_norm`` (the paper's regulariser) to push the spectrum down between substitutions.
    Conventions: conv kernels are truncated flattened to out × in·kh·kw; ``layers`` as
    nuclear_norm (``hidden`` leaves the readout alone); the substitution runs after the optimizer
    step of every update t with t % every = 0, and the optimizer state is kept. Verify the
    defaults against the paper (e 0.99, period 20 here). ``ranks`` holds the latest k per layer.
    """

    name = "trained_rank_pruning"
    group = "repr"
    source = "Trained Rank Pruning for Efficient Deep Neural Networks (Xu et al., 2019)"
    refuses = frozenset({"reparametrizes"})
    params = (
        Param("energy", float, 0.99, 0.5, 1.0, live=True, help="energy threshold e: keep Σ_{i≤k}σ_i² ≥ e·Σσ_i²"),
        Param("every", int, 20, 1, 10000, live=True, log=True, help="truncate every this many updates"),
        Param("layers", str, "hidden", choices=("hidden", "all"),
              help="hidden: every weight matrix except the readout; all: the readout too"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.layers = covered_layers(setup, self["layers"])
        self.ranks: list[int] = []

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if step % self["every"]:
            return
        ranks = []
        for layer in self.layers:
            truncated, k = truncate(layer.weight, self["energy"])
            layer.weight.copy_(truncated)
            ranks.append(k)
        self.ranks = ranks
