"""Mixup: train on convex combinations of example pairs and of their targets."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from engine.regularizers._common import class_count, refuse_unmixable_config, refuse_unmixable_data, soft_targets
from engine.regularizers.base import Batch, Param, Regularizer, Setup, register


@register
class Mixup(Regularizer):
    """Train on λx + (1−λ)x_π with targets λỹ + (1−λ)ỹ_π, λ ~ Beta(α, α), π a batch permutation.

    *mixup: Beyond Empirical Risk Minimization* (Zhang et al., 2018). One λ per batch by default
    (the paper's reference code); ``per_sample`` draws one λ per example instead. Runs last in
    ``transform_batch`` (order 90), after input noise; label smoothing then acts on the mixed
    targets. Training only — the trainer never mixes evaluation batches, and memorization
    metrics must come from an unmixed pass (training accuracy on mixed batches is meaningless).

    Randomness: π comes from the technique's torch generator. torch's Beta sampler takes no
    generator, so λ is drawn from a NumPy generator seeded with that generator's initial seed —
    still private to (run seed, "mixup"). As α → 0, λ ∈ {0, 1} and mixup reduces to plain CE on
    (a permutation of) the batch.

    Classification with float inputs and fully labelled data only (a few-label run would leak
    the hidden labels of unlabelled rows into the mixed targets). Cannot be combined with ELR,
    whose per-sample targets are ill-defined on mixed inputs.
    """

    name = "mixup"
    group = "label"
    source = "mixup: Beyond Empirical Risk Minimization (Zhang et al., 2018)"
    order = 90
    tasks = ("classification",)
    exclusive = "batch_mixing"
    marks = frozenset({"mixes_rows"})
    params = (
        Param("alpha", float, 1.0, 0.05, 32.0, live=True, log=True,
              help="Beta(α, α) concentration; small α ≈ no mixing"),
        Param("per_sample", bool, False, help="draw one λ per example instead of one per batch"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        refuse_unmixable_config(cls.name, cfg)

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)
        refuse_unmixable_data(self.name, setup)
        self._rng = np.random.default_rng(self.generator.initial_seed())
        self.last_lam: torch.Tensor | None = None  # λ and π of the latest batch, for metrics and tests
        self.last_perm: torch.Tensor | None = None

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        n = batch.x.shape[0]
        alpha = self["alpha"]
        lam_np = self._rng.beta(alpha, alpha, size=n if self["per_sample"] else 1)
        lam = torch.as_tensor(lam_np, dtype=batch.x.dtype).to(batch.x.device)
        perm = torch.randperm(n, generator=self.generator).to(batch.x.device)
        self.last_lam, self.last_perm = lam, perm

        lam_x = lam.view(-1, *([1] * (batch.x.dim() - 1)))
        x = lam_x * batch.x + (1 - lam_x) * batch.x[perm]
        target = soft_targets(batch, self.num_classes)
        lam_y = lam.to(target.dtype).view(-1, 1)
        y_soft = lam_y * target + (1 - lam_y) * target[perm]
        return replace(batch, x=x, y_soft=y_soft)
