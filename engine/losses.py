"""Data losses: cross-entropy (optionally in float64) and MSE, on hard or soft targets.

The output function (log_softmax, or a technique's replacement such as StableMax) is passed in,
so the same code computes the training loss, the evaluation loss and, later, the objective
whose curvature the diagnostics measure.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from engine.config import LossConfig
from engine.regularizers.base import Batch

OutputFn = Callable[[Tensor], Tensor]


def log_softmax(logits: Tensor) -> Tensor:
    return logits.log_softmax(-1)  # = F.log_softmax(logits, dim=-1), without the wrapper (hot path)


def data_loss(
    outputs: Tensor, batch: Batch, cfg: LossConfig, task: str, output_fn: OutputFn = log_softmax
) -> tuple[Tensor, Tensor | None]:
    """Mean data loss over the (labelled rows of the) batch, and the log-probabilities if any."""
    if cfg.float64:
        outputs = outputs.double()
    weight = None if batch.labeled is None else batch.labeled.to(outputs.dtype)
    if task != "classification":
        per_example = _mse(outputs, batch.y.to(outputs.dtype), cfg)
        return _mean(per_example, weight), None
    num_classes = outputs.shape[-1]
    if cfg.name == "mse":
        target = batch.y_soft if batch.y_soft is not None else F.one_hot(batch.y, num_classes)
        return _mean(_mse(outputs, target.to(outputs.dtype), cfg), weight), None
    log_probs = output_fn(outputs)
    if batch.y_soft is not None:
        per_example = -(batch.y_soft.to(log_probs.dtype) * log_probs).sum(-1)
    else:
        per_example = _nll(log_probs, batch.y)
    return _mean(per_example, weight), log_probs


def _nll(log_probs: Tensor, y: Tensor) -> Tensor:
    """−log p[target] per example.

    On (N, C) log-probabilities this is ``F.nll_loss(reduction="none")``: one autograd node
    instead of gather → squeeze → neg (the training step's hot path), and bit-identical to it in
    value and gradient (each entry is the exactly negated pick; backward writes −grad at the target).
    Other shapes (a class axis that is not dim 1) keep the general gather.
    """
    if log_probs.dim() == 2:
        return F.nll_loss(log_probs, y, reduction="none")
    return -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _mse(outputs: Tensor, target: Tensor, cfg: LossConfig) -> Tensor:
    sq = (outputs - target).pow(2).flatten(1)
    return 0.5 * sq.sum(1) if cfg.mse_reduction == "half_sum" else sq.mean(1)


def _mean(per_example: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return per_example.mean()
    return (per_example * weight).sum() / weight.sum().clamp_min(1.0)


def accuracy_counts(outputs: Tensor, labels: Tensor) -> Tensor:
    """Boolean per-example correctness (argmax; StableMax keeps the argmax of the logits)."""
    return outputs.argmax(-1) == labels
