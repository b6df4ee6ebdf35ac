"""Data losses: cross-entropy (optionally in float64), MSE, GCE and the spherical Z-loss.

All four take hard labels or soft targets (``batch.y_soft``); GCE and the Z-loss extend to soft
targets linearly, like cross-entropy: per example Σ_c y_c·ℓ(c), which is ℓ(y) for a one-hot y.

The output function (log_softmax, or a technique's replacement such as StableMax) is passed in,
so the same code computes the training loss, the evaluation loss and, later, the objective
whose curvature the diagnostics measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.batch import Batch
from engine.plugin import Param, Plugin
from engine.registry import Registry

if TYPE_CHECKING:
    from engine.config import LossConfig

OutputFn = Callable[[Tensor], Tensor]


def log_softmax(logits: Tensor) -> Tensor:
    return logits.log_softmax(-1)  # = F.log_softmax(logits, dim=-1), without the wrapper (hot path)


class LossFamily(Plugin):
    """Base of a data loss: the tasks it serves, its own ``loss.<param>`` keys, and its per-example value.

    ``per_example`` returns the per-example loss and the log-probabilities when the loss goes
    through the output function (None for losses on raw outputs, e.g. MSE).
    """

    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    @classmethod
    def per_example(cls, outputs: Tensor, batch: Batch, cfg: LossConfig, task: str,
                    output_fn: OutputFn) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


LOSSES: Registry[type[LossFamily]] = Registry(__name__, "loss.name", default="ce")


def register_loss(cls: type[LossFamily]) -> type[LossFamily]:
    """Class decorator: add a ``LossFamily`` subclass to the registry under ``cls.name``."""
    LOSSES.add(cls.name, cls)
    return cls


def data_loss(
    outputs: Tensor, batch: Batch, cfg: LossConfig, task: str, output_fn: OutputFn = log_softmax
) -> tuple[Tensor, Tensor | None]:
    """Mean data loss over the (labelled rows of the) batch, and the log-probabilities if any."""
    if cfg.float64:
        outputs = outputs.double()
    weight = None if batch.labeled is None else batch.labeled.to(outputs.dtype)
    loss = MSE if task != "classification" else LOSSES.lookup(cfg.name)  # regression/reconstruction: MSE only
    per_example, log_probs = loss.per_example(outputs, batch, cfg, task, output_fn)
    return _mean(per_example, weight), log_probs


@register_loss
class CrossEntropy(LossFamily):
    """Cross-entropy on the output function's log-probabilities (hard or soft targets)."""

    name = "ce"

    @classmethod
    def per_example(cls, outputs: Tensor, batch: Batch, cfg: LossConfig, task: str,
                    output_fn: OutputFn) -> tuple[Tensor, Tensor | None]:
        log_probs = output_fn(outputs)
        if batch.y_soft is not None:
            return -(batch.y_soft.to(log_probs.dtype) * log_probs).sum(-1), log_probs
        return _nll(log_probs, batch.y), log_probs


@register_loss
class MSE(LossFamily):
    """Squared error against one-hot (or soft) targets, or the regression targets."""

    name = "mse"
    tasks = frozenset({"classification", "regression", "reconstruction"})
    params = (Param("mse_reduction", str, "half_sum", choices=("half_sum", "mean"),
                    help="half_sum: ½Σ_c (f−y)² averaged over examples; mean: over all entries"),)

    @classmethod
    def per_example(cls, outputs: Tensor, batch: Batch, cfg: LossConfig, task: str,
                    output_fn: OutputFn) -> tuple[Tensor, Tensor | None]:
        if task != "classification":
            return _mse(outputs, batch.y.to(outputs.dtype), cfg), None
        target = batch.y_soft if batch.y_soft is not None else F.one_hot(batch.y, outputs.shape[-1])
        return _mse(outputs, target.to(outputs.dtype), cfg), None


@register_loss
class GCE(LossFamily):
    """Generalized cross-entropy (Zhang & Sabuncu 2018), robust to label noise."""

    name = "gce"
    params = (Param("q", float, 0.7, 0.05, 1, help="gce: q (q → 0 is CE, q = 1 is MAE)"),)

    @classmethod
    def per_example(cls, outputs: Tensor, batch: Batch, cfg: LossConfig, task: str,
                    output_fn: OutputFn) -> tuple[Tensor, Tensor | None]:
        log_probs = output_fn(outputs)
        return gce_per_example(log_probs, batch, cfg.q), log_probs


@register_loss
class ZSpherical(LossFamily):
    """Spherical Z-loss (de Brébisson & Vincent 2016) on standardised logits."""

    name = "z_spherical"
    params = (Param("z_a", float, 1.0, 0.1, 10, help="z_spherical: a in (1/a)·softplus(a(b − ẑ_y))"),
              Param("z_b", float, 0.0, -5, 5, help="z_spherical: b"))

    @classmethod
    def per_example(cls, outputs: Tensor, batch: Batch, cfg: LossConfig, task: str,
                    output_fn: OutputFn) -> tuple[Tensor, Tensor | None]:
        log_probs = output_fn(outputs)
        return z_spherical_per_example(outputs, batch, cfg.z_a, cfg.z_b), log_probs


def gce_per_example(log_probs: Tensor, batch: Batch, q: float) -> Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018): (1 − p_y^q)/q per example.

    p comes from the run's output function (softmax, or StableMax). Written as
    −expm1(q·log p_y)/q, so small q stays accurate: q → 0 is cross-entropy −log p_y, q = 1 is
    MAE 1 − p_y, and the logit gradient is p_y^q × the CE gradient (confident rows count fully,
    rows the model disagrees with — often the noisy ones — are down-weighted). Soft targets:
    Σ_c y_c·(1 − p_c^q)/q.
    """
    if batch.y_soft is not None:
        return -(batch.y_soft.to(log_probs.dtype) * torch.expm1(q * log_probs)).sum(-1) / q
    return -torch.expm1(-q * _nll(log_probs, batch.y)) / q


def z_spherical_per_example(outputs: Tensor, batch: Batch, a: float = 1.0, b: float = 0.0) -> Tensor:
    """Spherical Z-loss (de Brébisson & Vincent 2016): (1/a)·softplus(a(b − ẑ_y)) per example.

    ẑ = (z − mean_j z_j)/(std_j z_j + 1e-8) with the population std (ddof 0, the paper's
    1/C convention), so the loss is invariant to adding a constant to all logits and to
    scaling them by s > 0. Not a probability model: softmax(z) calibration means nothing here.
    Soft targets: Σ_c y_c·(1/a)·softplus(a(b − ẑ_c)).
    """
    mu = outputs.mean(-1, keepdim=True)
    sigma = outputs.std(-1, correction=0, keepdim=True) + 1e-8  # torch's std backward is 0, not 0/0, at σ = 0
    z_hat = (outputs - mu) / sigma
    if batch.y_soft is not None:
        return (batch.y_soft.to(z_hat.dtype) * F.softplus(a * (b - z_hat))).sum(-1) / a
    z_y = -_nll(z_hat, batch.y)  # the pick z_hat[y] (nll_loss negates it)
    return F.softplus(a * (b - z_y)) / a


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
