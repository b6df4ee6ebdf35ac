"""PS-KD: soften each target with the model's own prediction for that sample from the previous epoch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from engine.regularizers._common import class_count, elapsed_steps, soft_targets
from engine.regularizers.base import Batch, LossContext, Param, Regularizer, Setup, register


@register
class PSKD(Regularizer):
    """Train on (1 − α_t)·ỹ + α_t·p_{t−1}(x): targets softened by last epoch's own predictions, α_t rising.

    *Self-Knowledge Distillation with Progressive Refinement of Targets* (Kim et al., ICCV 2021):

        α_t = α_T·t/T      t = completed epochs, T = epochs in the run (both from the step count)
        y_t = (1 − α_t)·ỹ + α_t·p_{t−1}(x);   L = −Σ_c y_t,c·log p_c(x)   (the trainer's soft CE)

    p_{t−1} is each sample's probability vector (the run's output function: softmax or
    StableMax) recorded during training — on the batch as trained, in train mode, from the first
    forward pass of each update (not SAM's perturbed second pass) — in an N×C buffer by sample
    id. Two buffers: the one being filled this epoch and a frozen copy of it taken when the epoch
    starts, so every target uses predictions from *before* the current epoch (an epoch is
    ``steps_per_epoch`` updates). A sample with no recorded prediction yet (epoch 0, or never
    drawn) uses ỹ. ỹ is the current target: the one-hot label, or an earlier soft target (label
    smoothing). With α_t = 0 (α_T = 0, or epoch 0) the batch is passed through untouched and
    nothing is added to the loss, so training is plain CE bit-for-bit. Targets stay on the simplex; the logit
    gradient of the soft CE is p − y_t. Needs stable sample ids (``batch.idx``); cannot be combined
    with mixing techniques that replace the inputs (mixup, CutMix), whose predictions do not
    belong to the sample id.
    """

    name = "pskd"
    group = "label"
    source = "Self-Knowledge Distillation with Progressive Refinement of Targets (Kim et al., 2021)"
    tasks = ("classification",)
    refuses = frozenset({"mixes_rows"})  # its targets are per example (batch.idx)
    params = (
        Param("alpha_T", float, 0.8, 0.0, 1.0, live=True, help="final weight α_T of the model's own past predictions"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        n_train = int(setup.dataset.n_train)
        self.num_classes = class_count(setup, self.name)
        self.current = torch.zeros(n_train, self.num_classes, device=setup.device)
        self.current_seen = torch.zeros(n_train, dtype=torch.bool, device=setup.device)
        self.previous = torch.zeros_like(self.current)
        self.previous_seen = torch.zeros_like(self.current_seen)
        self.epoch = 0
        self.steps_per_epoch = max(1, int(setup.steps_per_epoch))
        self.epochs = max(1.0, setup.total_steps / self.steps_per_epoch)
        self._recorded_step = -1  # record once per update (SAM's second pass is at a perturbed θ)

    def alpha_at(self, step: int) -> float:
        """α_t for the update the trainer numbers ``step``: α_T·t/T with t = completed epochs."""
        t = elapsed_steps(step) // self.steps_per_epoch
        return min(self["alpha_T"], self["alpha_T"] * t / self.epochs)

    def _roll(self, step: int) -> None:
        """At the first update of a new epoch, freeze the predictions recorded so far."""
        epoch = elapsed_steps(step) // self.steps_per_epoch
        if epoch != self.epoch:
            self.previous.copy_(self.current)
            self.previous_seen.copy_(self.current_seen)
            self.epoch = epoch

    def transform_targets(self, batch: Batch, step: int) -> Batch:
        self._roll(step)
        alpha = self.alpha_at(step)
        if alpha == 0.0:
            return batch
        target = soft_targets(batch, self.num_classes)
        idx = batch.idx.to(self.previous.device)
        past = self.previous[idx].to(device=target.device, dtype=target.dtype)
        seen = self.previous_seen[idx].to(target.device).unsqueeze(1)
        past = torch.where(seen, past, target)  # no prediction yet: keep ỹ
        return replace(batch, y_soft=(1.0 - alpha) * target + alpha * past)

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        self._roll(ctx.step)
        if ctx.step == self._recorded_step:
            return None
        self._recorded_step = ctx.step
        probs = ctx.log_probs.exp() if ctx.log_probs is not None else ctx.logits.softmax(dim=-1)
        idx = ctx.batch.idx.to(self.current.device)
        with torch.no_grad():
            self.current[idx] = probs.detach().to(device=self.current.device, dtype=self.current.dtype)
            self.current_seen[idx] = True
        return None
