"""Small geometric classification sets: two moons, circles, spirals and Gaussian blobs.

Each builder draws ``n_train + n_test`` points from one generator and splits them with a seeded
permutation, so train and test come from the same distribution and a larger ``n_test`` never
changes how the points are generated. Inputs are standardised with *train* statistics when
``data.standardize`` is on (the SSL and noise-injection techniques assume unit-scale inputs).

The helpers ``data_rng``, ``split_by_permutation``, ``standardize_by_train`` and ``to_dataset`` are
shared with the other vector families (xor, digits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.datasets import make_blobs, make_circles, make_moons

from engine.data import Dataset, register_dataset

if TYPE_CHECKING:
    from engine.config import DataConfig

# Per-purpose seed offsets: each random decision gets its own stream, so e.g. changing how points
# are split never changes the points themselves.
_GENERATE = 101
_SPLIT = 102

# The circles' inner/outer radius ratio: 0.5 (not sklearn's 0.8) leaves a visible gap at the default
# jitter, so a boundary-drawing demo starts from a separable problem.
CIRCLES_FACTOR = 0.5
# Blob centres are drawn in the box [-10, 10]^dim (sklearn's default); the cluster std is
# BLOB_STD_PER_JITTER * jitter so the default jitter 0.1 gives sklearn's default std 1.
BLOB_STD_PER_JITTER = 10.0
# Spiral arms sweep this many full turns from the centre to radius 1.
SPIRAL_TURNS = 1.0


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


def _finish(name: str, cfg: DataConfig, seed: int, x: np.ndarray, y: np.ndarray, num_classes: int) -> Dataset:
    """Split, optionally standardise, and wrap points drawn for the whole train+test pool."""
    x_tr, y_tr, x_te, y_te = split_by_permutation(x, y, cfg.n_train, data_rng(seed, _SPLIT))
    meta: dict[str, Any] = {}
    if cfg.standardize:
        x_tr, x_te, meta = standardize_by_train(x_tr, x_te)
    return to_dataset(name, x_tr, y_tr, x_te, y_te, num_classes, meta)


@register_dataset("moons")
def moons(cfg: DataConfig, seed: int) -> Dataset:
    """Two interleaving half-circles (2 classes; ``n_classes`` is ignored)."""
    n = cfg.n_train + cfg.n_test
    x, y = make_moons(n_samples=n, noise=cfg.jitter, random_state=sklearn_seed(data_rng(seed, _GENERATE)))
    return _finish("moons", cfg, seed, x, y, 2)


@register_dataset("circles")
def circles(cfg: DataConfig, seed: int) -> Dataset:
    """Two concentric circles, inner radius ``CIRCLES_FACTOR`` (2 classes; ``n_classes`` ignored)."""
    n = cfg.n_train + cfg.n_test
    x, y = make_circles(
        n_samples=n, noise=cfg.jitter, factor=CIRCLES_FACTOR, random_state=sklearn_seed(data_rng(seed, _GENERATE))
    )
    return _finish("circles", cfg, seed, x, y, 2)


@register_dataset("spirals")
def spirals(cfg: DataConfig, seed: int) -> Dataset:
    """``n_classes`` interleaved spiral arms with Gaussian jitter on the coordinates.

    Arm k starts at angle 2πk/C; a point at radius r ~ U(0, 1) sits at angle
    2πk/C + 2π·SPIRAL_TURNS·r. Class sizes differ by at most one.
    """
    n, c = cfg.n_train + cfg.n_test, cfg.n_classes
    rng = data_rng(seed, _GENERATE)
    y = np.arange(n) % c
    r = rng.uniform(0.0, 1.0, size=n)
    theta = 2 * np.pi * y / c + 2 * np.pi * SPIRAL_TURNS * r
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x = x + cfg.jitter * rng.standard_normal(x.shape)
    return _finish("spirals", cfg, seed, x, y, c)


@register_dataset("blobs")
def blobs(cfg: DataConfig, seed: int) -> Dataset:
    """``n_classes`` isotropic Gaussian blobs in ``dim`` dimensions (std = 10·jitter, see module)."""
    n = cfg.n_train + cfg.n_test
    x, y = make_blobs(
        n_samples=n,
        n_features=cfg.dim,
        centers=cfg.n_classes,
        cluster_std=BLOB_STD_PER_JITTER * cfg.jitter,
        random_state=sklearn_seed(data_rng(seed, _GENERATE)),
    )
    return _finish("blobs", cfg, seed, x, y, cfg.n_classes)
