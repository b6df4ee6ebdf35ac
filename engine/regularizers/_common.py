"""Small helpers shared by several techniques: class counts, soft targets, the step convention."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from engine.regularizers.base import Batch, Setup


def elapsed_steps(step: int) -> int:
    """Updates completed before the one the trainer numbers ``step``.

    The trainer numbers updates 1..T when it calls the hooks (engine/trainer.py), so update
    ``step`` is the (step − 1)-th counted from 0. Schedules given as a fraction f of the run
    switch when ``elapsed_steps(step) ≥ f·T``; gradient noise anneals with t = elapsed_steps.
    """
    return step - 1


def class_count(setup: Setup, who: str) -> int:
    """Number of classes of a classification run; a clear error where there is none."""
    count = setup.num_classes or getattr(setup.dataset, "num_classes", None)
    if not count:
        raise ValueError(f"regularizers.{who}: needs a classification dataset with num_classes set")
    return int(count)


def soft_targets(batch: Batch, num_classes: int) -> Tensor:
    """The batch's current target as an N×C distribution: ``y_soft`` if set, else one-hot(y)."""
    if batch.y_soft is not None:
        return batch.y_soft
    return F.one_hot(batch.y.long(), num_classes).to(torch.get_default_dtype())
