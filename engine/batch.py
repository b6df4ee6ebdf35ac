"""The data a training step passes around: the batch, what a loss term sees, what a technique is built with.

These live at the bottom of the engine (torch only) because the trainer, the losses, the
evaluation and every technique and diagnostic exchange them; keeping them out of any plugin
package means no plugin family has to import another to speak to the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from engine.data import Dataset


@dataclass
class Batch:
    """A training batch. ``y_soft`` (N×C) replaces ``y`` as the target once a technique softens it."""

    x: Tensor
    y: Tensor
    idx: Tensor  # positions in the training set, stable across shuffles (ELR, PS-KD)
    y_soft: Tensor | None = None
    labeled: Tensor | None = None  # semi-supervised: which rows carry a usable label (None = all)


@dataclass
class LossContext:
    """What ``extra_loss`` sees: the batch as trained on, the model's outputs, and where we are."""

    batch: Batch
    logits: Tensor
    log_probs: Tensor | None  # None for regression tasks
    model: nn.Module
    step: int
    total_steps: int
    data_loss: Tensor
    features: Tensor | None = None


@dataclass
class Setup:
    """What a technique may use when it is built: the run's model, data and seeds."""

    model: nn.Module
    dataset: Dataset
    seed: int
    total_steps: int
    num_classes: int | None
    device: torch.device
    lr: Callable[[], float] = field(default=lambda: 0.0)  # current learning rate, for proximal steps
    steps_per_epoch: int = 1
