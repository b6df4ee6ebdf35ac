"""Small helpers shared by several techniques: class counts, soft targets, the step convention."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from engine.regularizers.base import Batch, Setup
from engine.traits import run_traits


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


def refuse_unmixable(who: str, tokens: bool, few_labels: bool) -> None:
    """Input-mixing techniques (mixup, RegMixup) cannot mix integer tokens, and in a few-label run
    they would mix the hidden labels of unlabelled rows into the targets."""
    if tokens:
        raise ValueError(f"regularizers.{who}: token inputs cannot be mixed; "
                         f"use data.encoding=onehot or disable {who}")
    if few_labels:
        raise ValueError(f"regularizers.{who}: a few-label run would mix in the hidden labels of unlabelled "
                         f"examples; set data.n_labeled=0 or disable {who}")


def refuse_unmixable_config(who: str, cfg: Any) -> None:
    refuse_unmixable(who, run_traits(cfg).inputs == "tokens", bool(cfg.data.n_labeled))


def refuse_unmixable_data(who: str, setup: Setup) -> None:
    """The same refusal at build time, from the dataset itself (defence in depth)."""
    x_train = getattr(setup.dataset, "x_train", None)
    tokens = x_train is not None and not torch.is_floating_point(x_train)
    refuse_unmixable(who, tokens, getattr(setup.dataset, "labeled", None) is not None)
