"""Label smoothing, optionally switched off part-way through the run (two-stage TSLA)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.regularizers._common import class_count, elapsed_steps, soft_targets
from engine.regularizers.base import Batch, Param, Regularizer, Setup, register


@register
class LabelSmoothing(Regularizer):
    """Train on (1 − ε)·ỹ + ε/C instead of one-hot labels, capping confidence and logit growth.

    *Rethinking the Inception Architecture for Computer Vision* (Szegedy et al., 2016); the
    two-stage variant (TSLA) from *Towards Understanding Label Smoothing* (Xu et al., 2020).
    ỹ is the current target: the one-hot label, or the mixed target when mixup ran first.

    Convention for ``t_off`` (fraction of the run): smoothing applies while the number of
    completed updates is < t_off·total_steps, and is off afterwards. t_off = 1.0 (default) never switches off;
    t_off = 0 never smooths. While off (or ε = 0) the batch is passed through untouched, so the
    loss is plain CE bit-for-bit. The loss never reaches 0 (floor H(y_LS)): never stop a run on
    "loss < 1e-3".
    """

    name = "label_smoothing"
    group = "label"
    source = ("Rethinking the Inception Architecture for Computer Vision (Szegedy et al., 2016); "
              "Towards Understanding Label Smoothing (Xu et al., 2020)")
    tasks = ("classification",)
    params = (
        Param("eps", float, 0.1, 0.0, 0.5, live=True, help="smoothing ε: mass spread uniformly over the C classes"),
        Param("t_off", float, 1.0, 0.0, 1.0, help="fraction of the run after which ε = 0 (1 = never)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)

    def eps_at(self, step: int) -> float:
        """ε for the update the trainer numbers ``step`` (1-based)."""
        return self["eps"] if elapsed_steps(step) < self["t_off"] * self.setup.total_steps else 0.0

    def transform_targets(self, batch: Batch, step: int) -> Batch:
        eps = self.eps_at(step)
        if eps == 0.0:
            return batch
        target = soft_targets(batch, self.num_classes)
        return replace(batch, y_soft=(1.0 - eps) * target + eps / self.num_classes)
