"""Shared machinery of the semi-supervised consistency techniques.

Every SSL technique adds w(t)·L_u to the trainer's data loss, where the data loss is already a
masked mean over the *labelled* rows of the batch (``Batch.labeled``) and L_u is computed here on
the batch's *unlabelled* rows only. The true labels of those rows stay in ``y`` for one purpose:
``ssl/pseudo_acc``. Nothing here ever trains on them.

What lives here:

* ``ramp_weight`` — the shared ramp w(t) = w_max·exp(−5(1 − t/T_r)²) for t < T_r, then w_max,
  with T_r = ``ramp``·T and t the number of completed updates (``elapsed_steps``).
* ``gaussian_view`` — x + σε with ε from the technique's own generator (the input-noise operator
  of ``input_noise``; weak view σ 0.1, strong view σ 0.4 on two moons).
* ``unlabeled_rows`` / ``hidden_labels`` — which rows of a batch are unlabelled, and their
  hidden true labels (``y_train_true`` when label noise is on too, else the batch's ``y``).
* ``private_rng`` — runs the technique's extra forwards with torch's global RNG forked and
  seeded from the technique's generator, so dropout masks drawn there neither come from nor
  shift the run's main stream.
* ``EmaTeacher`` — θ′ ← αθ′ + (1 − α)θ after each optimizer step (buffers copied), for mean
  teacher and ICT.
* ``SSLRegularizer`` — the base class: config checks, the unlabelled-row plumbing, the weight
  ramp and the ``ssl/*`` metrics (stored in ``extra_loss``, returned from ``metrics``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from engine.regularizers._common import class_count, elapsed_steps
from engine.regularizers.base import Batch, LossContext, Regularizer, Setup
from engine.traits import run_traits

RAMP_SHAPE = 5.0  # the 5 in exp(−5(1 − t/T_r)²) (Laine & Aila's sigmoid-shaped ramp-up)


def ramp_weight(w_max: float, ramp: float, step: int, total_steps: int) -> float:
    """w(t) for the update the trainer numbers ``step`` (1-based; t = step − 1 completed updates).

    w_max·exp(−5(1 − t/T_r)²) while t < T_r = ramp·T, then w_max; ``ramp`` = 0 means no ramp.
    """
    t, t_r = elapsed_steps(step), ramp * total_steps
    if t >= t_r:
        return float(w_max)
    return float(w_max) * math.exp(-RAMP_SHAPE * (1.0 - t / t_r) ** 2)


def gaussian_view(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """x + σε, ε ~ N(0, I) drawn on the CPU from ``generator`` (σ = 0: x itself, nothing drawn)."""
    if sigma == 0.0:
        return x
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + sigma * noise.to(x.device)


def unlabeled_rows(batch: Batch) -> Tensor:
    """Row positions of the batch's unlabelled examples (none when ``labeled`` is None)."""
    if batch.labeled is None:
        return torch.zeros(0, dtype=torch.long, device=batch.x.device)
    return (~batch.labeled.bool()).nonzero(as_tuple=True)[0]


def hidden_labels(setup: Setup, batch: Batch, rows: Tensor) -> Tensor:
    """True labels of the given rows, for ``ssl/pseudo_acc`` only (never a training target).

    ``y_train_true`` when the dataset has it (label noise on top of the few-label split), else
    the batch's ``y``, which keeps the unlabelled rows' true labels (engine/data/noise.py).
    """
    truth = getattr(setup.dataset, "y_train_true", None)
    if truth is not None:
        return truth[batch.idx[rows].to(truth.device)].to(batch.y.device)
    return batch.y[rows]


@contextmanager
def private_rng(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Fork torch's global RNG and seed it from ``generator`` for the duration of the block."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield


def squared_distance(p: Tensor, q: Tensor) -> Tensor:
    """mean_u ‖p_u − q_u‖² (sum over classes, mean over rows): the shared consistency distance."""
    return (p - q).pow(2).sum(dim=1).mean()


class EmaTeacher:
    """An exponential-moving-average copy of the student: θ′ ← αθ′ + (1 − α)θ, buffers copied.

    The teacher is ``copy.deepcopy(student)`` at build time (θ′₀ = θ₀) with ``requires_grad``
    off, so it never receives gradients; it is updated only by ``update`` (after each optimizer
    step). Its forward runs under ``no_grad`` in the student's train/eval mode, with the
    student's current dropout p (the dropout technique may change p mid-run).
    """

    def __init__(self, student: nn.Module) -> None:
        self.student = student
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._params = list(zip(self.model.parameters(), student.parameters(), strict=True))
        self._buffers = list(zip(self.model.buffers(), student.buffers(), strict=True))
        self._dropouts = [(t, s) for t, s in zip(self.model.modules(), student.modules(), strict=True)
                          if isinstance(s, nn.Dropout)]

    @staticmethod
    def warmed_alpha(alpha: float, step: int) -> float:
        """min(1 − 1/(step + 1), α): the reference implementations' warm-up (step is 1-based),
        so the teacher averages all iterates so far until 1/(step + 1) falls below 1 − α."""
        return min(1.0 - 1.0 / (step + 1), alpha)

    @torch.no_grad()
    def update(self, alpha: float) -> None:
        teacher = [t for t, _ in self._params]
        torch._foreach_mul_(teacher, alpha)
        torch._foreach_add_(teacher, [s.detach() for _, s in self._params], alpha=1.0 - alpha)
        for t, s in self._buffers:
            t.copy_(s)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        if self.model.training != self.student.training:
            self.model.train(self.student.training)
        for t, s in self._dropouts:
            t.p = s.p
        return self.model(x)


class SSLRegularizer(Regularizer):
    """Base of the SSL techniques (not registered): subclasses implement ``unlabeled_loss``."""

    group = "ssl"
    tasks = ("classification",)
    exclusive = "ssl_student_teacher"  # one consistency / pseudo-label method trains on the unlabelled rows
    weight_param: ClassVar[str] = "w_max"

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if run_traits(cfg).task != "classification":
            raise ValueError(f"regularizers.{cls.name}: semi-supervised consistency needs a classification "
                             f"dataset, not {cfg.data.name}; disable it")
        if not cfg.data.n_labeled:
            raise ValueError(f"regularizers.{cls.name}: every training example is labelled (data.n_labeled=0), "
                             "so there is nothing unlabelled to learn from; set data.n_labeled (e.g. 10)")
        if cfg.data.n_labeled >= cfg.data.n_train:
            raise ValueError(f"regularizers.{cls.name}: data.n_labeled={cfg.data.n_labeled} leaves no unlabelled "
                             f"examples of data.n_train={cfg.data.n_train}; lower data.n_labeled")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)
        if getattr(setup.dataset, "labeled", None) is None:
            raise ValueError(f"regularizers.{self.name}: needs a few-label run with unlabelled examples; "
                             "set data.n_labeled (e.g. 10)")
        x_train = getattr(setup.dataset, "x_train", None)
        if x_train is not None and not torch.is_floating_point(x_train):
            raise ValueError(f"regularizers.{self.name}: inputs are integer tokens and cannot take noisy views; "
                             "use data.encoding=onehot or disable it")
        self._pending: tuple[list[str], Tensor, int, float] | None = None
        self._weight = 0.0
        self.last_loss_u: Tensor | None = None  # L_u of the latest batch (before the weight), for tests

    def weight(self, step: int) -> float:
        return ramp_weight(self[self.weight_param], self["ramp"], step, self.setup.total_steps)

    def unlabeled_loss(self, ctx: LossContext, u: Tensor, rows: Tensor) -> Tensor:
        """L_u on the unlabelled inputs ``u`` = ``ctx.batch.x[rows]``; calls ``tally`` for metrics."""
        raise NotImplementedError

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        rows = unlabeled_rows(ctx.batch)
        self._pending = None
        if rows.numel() == 0:  # a mini-batch without unlabelled rows: nothing to add
            return None
        self._weight = self.weight(ctx.step)
        with private_rng(self.generator, ctx.logits.device):
            loss_u = self.unlabeled_loss(ctx, ctx.batch.x[rows], rows)
        self.last_loss_u = loss_u.detach()
        return self._weight * loss_u

    def tally(self, ctx: LossContext, rows: Tensor, pseudo: Tensor, mask: Tensor | None = None,
              **extra: Tensor) -> None:
        """Store this batch's metrics (converted to floats on log steps only, in ``metrics``).

        ``pseudo``: the pseudo-labels of the unlabelled rows (argmax of the target distribution);
        ``mask``: which of them were used (None = all, for methods without a threshold);
        ``extra``: per-row values averaged into ``ssl/<key>`` (e.g. ``disagree``).
        """
        correct = (pseudo == hidden_labels(self.setup, ctx.batch, rows)).float()
        used = torch.ones_like(correct) if mask is None else mask.float()
        parts = {"correct_used": (correct * used).sum(), "used": used.sum(), "correct_all": correct.sum()}
        parts.update({key: value.float().sum() for key, value in extra.items()})
        self._pending = (list(parts), torch.stack([v.detach() for v in parts.values()]), len(rows), self._weight)

    def metrics(self) -> dict[str, float]:
        """``ssl/pseudo_acc`` (used pseudo-labels; absent when none passed the mask),
        ``ssl/pseudo_acc_all``, ``ssl/mask_rate`` (mean of the mask; 1 without a threshold),
        ``ssl/weight`` = w(t), plus the technique's extras."""
        if self._pending is None:
            return {}
        names, stacked, n, weight = self._pending
        self._pending = None
        values = dict(zip(names, stacked.tolist(), strict=True))
        used, correct_used, correct_all = values.pop("used"), values.pop("correct_used"), values.pop("correct_all")
        metrics = {"ssl/mask_rate": used / n, "ssl/pseudo_acc_all": correct_all / n, "ssl/weight": weight}
        if used > 0:
            metrics["ssl/pseudo_acc"] = correct_used / used
        metrics.update({f"ssl/{key}": value / n for key, value in values.items()})
        return metrics
