"""Evaluation passes: eval mode, unaugmented data, no gradients, model state restored.

Accuracy is measured against the labels as *given* for training; with few labels
``train/acc_labeled`` is the accuracy on the labelled subset; regression and reconstruction
report R² (``train/r2``, ``test/r2``). When labels are noisy the memorisation metrics
(Liu et al. 2020; Arpit et al. 2017) are added:
``train/acc_clean`` (clean-labelled examples), ``train/acc_noisy`` (noisy-labelled examples
predicted as their TRUE label, "noisy-correct") and ``noisy/memorized_frac`` (predicted as their
wrong training label).

For 2-D classification sets ``BoundaryGrid`` adds the model's decision on a fixed grid over the
input plane (the Lab's live decision-boundary panel), computed at the snapshot schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.batch import Batch
from engine.config import LossConfig
from engine.data import Dataset
from engine.diagnostics.representation import fvu
from engine.losses import data_loss
from engine.models import LabModel

CHUNK = 8192


@torch.no_grad()
def _outputs(model: LabModel, x: Tensor, with_features: bool = False) -> tuple[Tensor, Tensor | None]:
    was_training = model.training
    model.eval()
    try:
        outs, feats = [], []
        for start in range(0, x.shape[0], CHUNK):
            if with_features:
                out, feat = model.forward_with_features(x[start:start + CHUNK])
                feats.append(feat)
            else:
                out = model(x[start:start + CHUNK])
            outs.append(out)
        return torch.cat(outs), (torch.cat(feats) if with_features else None)
    finally:
        model.train(was_training)


def evaluate(model: LabModel, data: Dataset, loss_cfg: LossConfig, output_fn: Callable[[Tensor], Tensor]
             ) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if x.shape[0] == 0:
            continue
        outputs, _ = _outputs(model, x)
        with torch.no_grad():
            idx = torch.arange(x.shape[0], device=x.device)
            loss, _ = data_loss(outputs, Batch(x, y, idx), loss_cfg, data.task, output_fn)
        metrics[f"{split}/loss_full" if split == "train" else "test/loss"] = float(loss)
        if data.task != "classification":
            metrics[f"{split}/r2"] = r_squared(outputs, y)
            continue
        correct = outputs.argmax(-1) == y
        metrics[f"{split}/acc"] = float(correct.float().mean())
        if split == "train" and data.labeled is not None:
            metrics["train/acc_labeled"] = float(correct[data.labeled].float().mean())
        if split == "train" and data.is_noisy is not None and data.y_train_true is not None:
            metrics.update(memorization(outputs.argmax(-1), y, data.y_train_true, data.is_noisy))
    return metrics


def r_squared(outputs: Tensor, targets: Tensor) -> float:
    """Coefficient of determination R² = 1 − FVU (the SAE papers' fraction of variance unexplained,
    ``engine.diagnostics.representation.fvu``: ȳ is the per-output mean over the split).

    Negative when the model is worse than predicting the mean; −inf for constant targets.
    """
    return 1.0 - fvu(targets, outputs)


def memorization(pred: Tensor, given: Tensor, true: Tensor, is_noisy: Tensor) -> dict[str, float]:
    """Clean / noisy-correct / memorised accuracies; identity: acc(given) = (1−ρ)·acc_clean + ρ·memorized_frac."""
    clean = ~is_noisy
    out = {"train/acc_clean": float((pred[clean] == given[clean]).float().mean()) if clean.any() else float("nan")}
    if is_noisy.any():
        out["train/acc_noisy"] = float((pred[is_noisy] == true[is_noisy]).float().mean())
        out["noisy/memorized_frac"] = float((pred[is_noisy] == given[is_noisy]).float().mean())
    return out


def probe_indices(data: Dataset, seed: int, size: int = 2000) -> Tensor:
    """Fixed, seeded, class-stratified subset of the training set (all of it when small)."""
    n = data.n_train
    if n <= size:
        return torch.arange(n, device=data.x_train.device)
    rng = np.random.default_rng([seed, 7919])
    if data.task != "classification":
        chosen = rng.choice(n, size, replace=False)
    else:
        labels = data.y_train.cpu().numpy()
        classes = np.unique(labels)
        per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
        quota = np.full(len(classes), size // len(classes))
        quota[: size - quota.sum()] += 1
        chosen = np.concatenate([idx[:q] for idx, q in zip(per_class, quota, strict=True)])
    return torch.as_tensor(np.sort(chosen), device=data.x_train.device)


def snapshot_arrays(
    model: LabModel, data: Dataset, probe: Tensor
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Penultimate features of the probe set with labels and flags for colouring."""
    x = data.x_train[probe]
    outputs, features = _outputs(model, x, with_features=True)
    assert features is not None
    labels = data.y_train[probe]
    flags: dict[str, np.ndarray] = {"index": probe.cpu().numpy()}
    if data.task == "classification":
        pred = outputs.argmax(-1)
        flags["pred"] = pred.cpu().numpy()
        flags["correct"] = (pred == labels).cpu().numpy()
        if data.is_noisy is not None and data.y_train_true is not None:
            flags["is_noisy"] = data.is_noisy[probe].cpu().numpy()
            flags["true_label"] = data.y_train_true[probe].cpu().numpy()
    return features.float().cpu().numpy(), labels.cpu().numpy(), flags


@dataclass(frozen=True)
class BoundaryGrid:
    """A fixed ``resolution × resolution`` grid over the training inputs of a 2-D classification set.

    The bounds are set once per run (training inputs ± ``pad`` of their range), so every frame of the
    live decision-boundary panel shows the same window and frames can be compared. Points are in
    row-major order, y outer and x inner, so predictions reshape to ``(len(ys), len(xs))`` — the
    ``z`` layout of a Plotly heatmap.
    """

    xs: Tensor
    ys: Tensor
    points: Tensor

    @classmethod
    def for_data(cls, data: Dataset, resolution: int = 80, pad: float = 0.1) -> BoundaryGrid | None:
        """None unless the inputs are a continuous plane (shape ``(2,)``) and the task is classification:
        the decision is by input shape, so any 2-D set (moons, spirals, blobs/xor with dim 2) qualifies."""
        x = data.x_train
        if data.task != "classification" or data.input_shape != (2,) or x.shape[0] == 0 or not x.is_floating_point():
            return None
        lo, hi = x.amin(0), x.amax(0)
        margin = (hi - lo).clamp_min(1e-3) * pad  # a degenerate (constant) coordinate still gets a window
        xs, ys = (torch.linspace(float(a), float(b), resolution, device=x.device, dtype=x.dtype)
                  for a, b in zip(lo - margin, hi + margin, strict=True))
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return cls(xs, ys, torch.stack([gx.flatten(), gy.flatten()], dim=1))

    @torch.no_grad()
    def predict(self, model: LabModel, output_fn: Callable[[Tensor], Tensor]) -> dict[str, np.ndarray]:
        """The model's decision on the grid, in eval mode without gradients (train mode restored).

        ``pred`` is the argmax of the outputs (as in every accuracy); ``conf`` the probability of that
        class under the run's output function (softmax, or StableMax when it replaces it).
        """
        outputs, _ = _outputs(model, self.points)
        pred = outputs.argmax(-1)
        conf = output_fn(outputs).gather(-1, pred[:, None]).squeeze(-1).exp()
        shape = (len(self.ys), len(self.xs))
        return {
            "x": self.xs.float().cpu().numpy(),
            "y": self.ys.float().cpu().numpy(),
            "pred": pred.reshape(shape).cpu().numpy(),
            "conf": conf.reshape(shape).float().cpu().numpy(),
            "num_classes": np.asarray(outputs.shape[-1]),
        }
