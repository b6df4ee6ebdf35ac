"""RegMixup: keep the clean cross-entropy and add a mixup cross-entropy as a regularizer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.regularizers._common import class_count, refuse_unmixable_config, refuse_unmixable_data, soft_targets
from engine.regularizers.base import Batch, LossContext, Param, Regularizer, Setup, register


@register
class RegMixup(Regularizer):
    """Add η·CE(f(x̃), ỹ) on a mixup batch to the clean loss, instead of replacing it (RegMixup).

    *RegMixup: Mixup as a Regularizer Can Surprisingly Improve Accuracy and Out Distribution
    Robustness* (Pinto et al., NeurIPS 2022):

        λ ~ Beta(α, α);  x̃ = λx + (1−λ)x_π;  ỹ = λỹ + (1−λ)ỹ_π
        L = L_data(x, y) + η·CE(f(x̃), ỹ)         (η 1, α 10: λ concentrated near 1/2)

    The trainer's batch stays clean, so the data loss (and ``train/loss``) is the plain loss and
    ELR / PS-KD see unmixed predictions; the mixed term is logged as ``reg/regmixup``. One λ and
    one π per batch, drawn once per update in ``transform_batch`` (order 90, after input noise)
    and reused by every closure call (SAM's second pass sees the same mixed batch). ỹ mixes the
    targets as they stand at that point (one-hot, or an earlier soft target). The mixed term is
    always softmax cross-entropy on a second forward pass (its own dropout masks), whatever
    ``loss.name`` is; for that reason it cannot be combined with StableMax. Randomness as mixup:
    λ from a NumPy generator seeded with the technique's generator seed, π from that generator.
    Classification with float inputs and fully labelled data only.
    """

    name = "regmixup"
    group = "label"
    source = ("RegMixup: Mixup as a Regularizer Can Surprisingly Improve Accuracy and Out Distribution Robustness "
              "(Pinto et al., 2022)")
    order = 90
    tasks = ("classification",)
    exclusive = "batch_mixing"
    refuses = frozenset({"replaces_output"})  # its mixed term is always softmax cross-entropy
    params = (
        Param("alpha", float, 10.0, 0.05, 32.0, live=True, log=True,
              help="Beta(α, α) concentration; RegMixup uses a large α (10 on CIFAR-10, 20 on CIFAR-100)"),
        Param("eta", float, 1.0, 0.0, 10.0, live=True, help="weight η of the mixup cross-entropy"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        refuse_unmixable_config(cls.name, cfg)

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)
        refuse_unmixable_data(self.name, setup)
        self._rng = np.random.default_rng(self.generator.initial_seed())
        self.mixed: tuple[Tensor, Tensor] | None = None  # (x̃, ỹ) of the current update
        self.last_lam: float | None = None
        self.last_perm: Tensor | None = None

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        alpha = self["alpha"]
        lam = float(self._rng.beta(alpha, alpha))
        n = batch.x.shape[0]
        perm = torch.randperm(n, generator=self.generator).to(batch.x.device)
        target = soft_targets(batch, self.num_classes)
        x_mix = lam * batch.x + (1.0 - lam) * batch.x[perm]
        y_mix = lam * target + (1.0 - lam) * target[perm]
        self.mixed, self.last_lam, self.last_perm = (x_mix, y_mix), lam, perm
        return batch

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        eta = self["eta"]
        if self.mixed is None or eta == 0.0:
            return None
        x_mix, y_mix = self.mixed
        outputs = ctx.model(x_mix)
        if ctx.log_probs is not None and ctx.log_probs.dtype == torch.float64:  # loss.float64: same precision
            outputs = outputs.double()
        log_probs = outputs.log_softmax(-1)
        return eta * -(y_mix.to(log_probs.dtype) * log_probs).sum(-1).mean()
