"""Random-label task switching: the continual-learning setting where networks lose plasticity.

The plasticity benchmark ("random-label MNIST"; Kumar et al. 2023, *Maintaining Plasticity in
Continual Learning via Regenerative Regularization*; Lewandowski et al. 2025, *Learning
Continually by Spectral Regularization*) trains one network on a sequence of tasks that share
the inputs but not the labels, and asks whether it can still fit the *last* task as well as the
first. ``data.tasks = N > 1`` splits the run into N tasks of ``train.steps // N`` updates (the
last task takes any remainder). Every task — the first included, so task 0 is as hard as the
others — relabels every example uniformly at random over the classes, from a generator seeded
by (seed, task): both arms of a comparison see exactly the same label sequence. Test labels are
redrawn too, so test accuracy sits at chance, as it must for random labels; the papers' measure
is the training accuracy at the end of each task.

Labels are overwritten in place (``copy_``, into copies taken before the trainer builds anything
else), so everything holding the Dataset or its label tensor (batches, evaluation, diagnostics,
techniques) sees the current task without being told. At the end of each task the schedule
emits ``task/index``, ``task/end_acc`` (training accuracy on that task's labels) and the largest
singular value of each layer's weight-with-bias (``task/sigma_max`` = max over layers,
``task/sigma_max_l<i>`` per layer: the quantity spectral regularization pulls toward 1 and that
keeps growing as plasticity is lost). ``data.tasks = 1`` changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engine.data import Dataset
from engine.data._common import data_rng

if TYPE_CHECKING:
    from engine.config import RunConfig

_TASK_LABELS = 1001


def task_labels(n: int, num_classes: int, seed: int, task: int) -> torch.Tensor:
    """Uniform random labels for task ``task``; the same for every run with this seed."""
    rng = data_rng(seed, _TASK_LABELS + task)
    return torch.from_numpy(rng.integers(0, num_classes, size=n, dtype=np.int64))


class TaskSchedule:
    """Relabels the dataset at every task boundary and reports each task's end-of-task metrics."""

    def __init__(self, cfg: RunConfig, data: Dataset) -> None:
        self.tasks, self.total_steps, self.seed, self.data = cfg.data.tasks, cfg.train.steps, cfg.seed, data
        if self.tasks == 1:
            return
        if self.tasks > self.total_steps:
            raise ValueError(f"data.tasks: {self.tasks} tasks need at least as many train.steps "
                             f"(got {self.total_steps}); lower data.tasks or raise train.steps")
        self.length = self.total_steps // self.tasks
        self.task = 0
        # Own copies, so relabelling in place can never write into a builder's cached arrays.
        data.y_train, data.y_test = data.y_train.clone(), data.y_test.clone()
        self._relabel()

    def task_end(self, step: int) -> bool:
        """Whether update ``step`` is the last one of the current task."""
        if self.tasks == 1:
            return False
        return step == self.total_steps or (step % self.length == 0 and step // self.length < self.tasks)

    def after_step(self, step: int, model: nn.Module) -> dict[str, float]:
        """At a task's last update: its end-of-task metrics (then the next task's labels); else {}."""
        if not self.task_end(step):
            return {}
        metrics = {"task/index": float(self.task), "task/end_acc": train_accuracy(model, self.data),
                   **sigma_max_metrics(model)}
        if step < self.total_steps:
            self.task += 1
            self._relabel()
        return metrics

    def _relabel(self) -> None:
        data = self.data
        assert data.num_classes is not None  # DataConfig refuses tasks > 1 on regression/reconstruction sets
        drawn = task_labels(data.n_train + len(data.y_test), data.num_classes, self.seed, self.task)
        data.y_train.copy_(drawn[: data.n_train].to(data.y_train.device))
        data.y_test.copy_(drawn[data.n_train :].to(data.y_test.device))


@torch.no_grad()
def train_accuracy(model: nn.Module, data: Dataset) -> float:
    """Accuracy on the training set as currently labelled, in eval mode (mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        return float((model(data.x_train).argmax(-1) == data.y_train).float().mean())
    finally:
        model.train(was_training)


@torch.no_grad()
def sigma_max_metrics(model: nn.Module) -> dict[str, float]:
    """Exact top singular value of each layer's [W | b] (the matrix spectral regularization targets).

    Layers: every trainable ``nn.Linear``/``nn.Conv2d`` in registration order, kernels flattened to
    out × in·kh·kw, bias appended as a column. Written here rather than imported from the spectral
    technique, because a dataset module may not import another plugin family (no import cycles).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d) and m.weight.requires_grad]
    sigmas = [float(torch.linalg.matrix_norm(_with_bias(layer), ord=2)) for layer in layers]
    if not sigmas:
        return {}
    return {"task/sigma_max": max(sigmas), **{f"task/sigma_max_l{i}": s for i, s in enumerate(sigmas)}}


def _with_bias(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.flatten(1)
    bias = getattr(layer, "bias", None)
    return w if bias is None else torch.cat([w, bias.unsqueeze(1)], dim=1)
