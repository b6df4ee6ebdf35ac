"""Small geometric classification sets: two moons, circles, spirals and Gaussian blobs.

Each builder draws ``n_train + n_test`` points from one generator and splits them with a seeded
permutation, so train and test come from the same distribution and a larger ``n_test`` never
changes how the points are generated. Inputs are standardised with *train* statistics when
``data.standardize`` is on (the SSL and noise-injection techniques assume unit-scale inputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.datasets import make_blobs, make_circles, make_moons

from engine.data import Dataset, register_dataset
from engine.data._common import (
    DIM,
    JITTER,
    N_CLASSES,
    data_rng,
    points_kind,
    sklearn_seed,
    split_by_permutation,
    standardize_by_train,
    to_dataset,
)

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


def _finish(name: str, cfg: DataConfig, seed: int, x: np.ndarray, y: np.ndarray, num_classes: int) -> Dataset:
    """Split, optionally standardise, and wrap points drawn for the whole train+test pool."""
    x_tr, y_tr, x_te, y_te = split_by_permutation(x, y, cfg.n_train, data_rng(seed, _SPLIT))
    meta: dict[str, Any] = {}
    if cfg.standardize:
        x_tr, x_te, meta = standardize_by_train(x_tr, x_te)
    return to_dataset(name, x_tr, y_tr, x_te, y_te, num_classes, meta)


@register_dataset("moons", inputs="points2d", params=(JITTER,), classes=2)
def moons(cfg: DataConfig, seed: int) -> Dataset:
    """Two interleaving half-circles (2 classes; ``n_classes`` is ignored)."""
    n = cfg.n_train + cfg.n_test
    x, y = make_moons(n_samples=n, noise=cfg.jitter, random_state=sklearn_seed(data_rng(seed, _GENERATE)))
    return _finish("moons", cfg, seed, x, y, 2)


@register_dataset("circles", inputs="points2d", params=(JITTER,), classes=2)
def circles(cfg: DataConfig, seed: int) -> Dataset:
    """Two concentric circles, inner radius ``CIRCLES_FACTOR`` (2 classes; ``n_classes`` ignored)."""
    n = cfg.n_train + cfg.n_test
    x, y = make_circles(
        n_samples=n, noise=cfg.jitter, factor=CIRCLES_FACTOR, random_state=sklearn_seed(data_rng(seed, _GENERATE))
    )
    return _finish("circles", cfg, seed, x, y, 2)


@register_dataset("spirals", inputs="points2d", params=(JITTER, N_CLASSES), classes=lambda cfg: cfg.n_classes)
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


@register_dataset("blobs", inputs=points_kind, kinds=("points2d", "vector"), params=(JITTER, DIM, N_CLASSES),
                  classes=lambda cfg: cfg.n_classes)
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
