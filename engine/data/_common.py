"""Helpers shared by the dataset families: private seeded generators, splits, scaling, wrapping."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.data.base import Dataset
from engine.plugin import Param

# Parameters several dataset families share; each family lists the ones it reads in ``params``.
JITTER = Param("jitter", float, 0.1, 0, 10, help="geometric noise of toy sets; teacher-student target noise std")
DIM = Param("dim", int, 2, 1, 4096, help="input dimension")
N_CLASSES = Param("n_classes", int, 3, 2, 1000, help="number of classes")


def points_kind(cfg: Any) -> str:
    """2-D inputs can be drawn as a decision boundary; anything wider is a plain vector."""
    return "points2d" if cfg.dim == 2 else "vector"


def data_rng(seed: int, purpose: int) -> np.random.Generator:
    """An independent NumPy generator for ``(seed, purpose)``; never touches global RNG state."""
    return np.random.default_rng([seed, purpose])


def sklearn_seed(rng: np.random.Generator) -> int:
    """An int ``random_state`` for scikit-learn generators, drawn from our own generator."""
    return int(rng.integers(0, 2**31 - 1))


def split_by_permutation(
    x: np.ndarray, y: np.ndarray, n_train: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with ``rng`` and cut: the first ``n_train`` rows train, the rest test."""
    order = rng.permutation(len(x))
    tr, te = order[:n_train], order[n_train:]
    return x[tr], y[tr], x[te], y[te]


def standardize_by_train(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-feature z-score with train statistics only (test must not leak into the scaling).

    Constant features (std 0, e.g. blank digit corners) are divided by 1 instead of 0.
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    stats = {"x_mean": torch.from_numpy(mean.astype(np.float32)), "x_std": torch.from_numpy(std.astype(np.float32))}
    return (x_train - mean) / std, (x_test - mean) / std, stats


def to_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    meta: dict[str, Any] | None = None,
) -> Dataset:
    """Wrap NumPy arrays as a classification ``Dataset`` (float32 inputs, int64 labels)."""
    return Dataset(
        name=name,
        task="classification",
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
        meta=meta or {},
    )
