"""scikit-learn's bundled 8×8 digits (1,797 images, 10 classes): the stand-in for MNIST.

Scaling follows the reference calibrations: pixels (0–16) are divided by 16 and then *always*
centred by the train mean, so noise-injection strengths and the edge-of-stability threshold mean
the same thing in every preset. ``data.standardize`` additionally divides each pixel by its train
std (constant pixels by 1); presets calibrated on "/16 then centre" set it to false.

Inputs stay flat 64-vectors (``meta["image_shape"] = (1, 8, 8)``; the CNN reshapes), the split is a
seeded permutation: the first ``n_train`` images train, the next ``min(n_test, rest)`` test.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.datasets import load_digits

from engine.data import Dataset, register_dataset
from engine.data._common import data_rng, standardize_by_train, to_dataset

if TYPE_CHECKING:
    from engine.config import DataConfig

_SPLIT = 301


@cache
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """The bundled arrays, read once per process (load_digits parses a CSV each call)."""
    bunch = load_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@register_dataset("digits", inputs="image", classes=10)
def digits(cfg: DataConfig, seed: int) -> Dataset:
    """Seeded train/test split of the 1,797 digits, scaled /16 and train-mean centred."""
    x, y = _raw()
    if cfg.n_train > len(x):
        raise ValueError(f"data.n_train: digits has {len(x):,} images (got {cfg.n_train}); lower data.n_train")
    order = data_rng(seed, _SPLIT).permutation(len(x))
    tr = order[: cfg.n_train]
    te = order[cfg.n_train : cfg.n_train + cfg.n_test]
    x_tr, x_te = x[tr] / 16.0, x[te] / 16.0
    meta: dict[str, Any] = {"image_shape": (1, 8, 8)}
    if cfg.standardize:
        x_tr, x_te, stats = standardize_by_train(x_tr, x_te)
        meta.update(stats)
    else:
        mean = x_tr.mean(axis=0)
        x_tr, x_te = x_tr - mean, x_te - mean
        meta["x_mean"] = torch.from_numpy(mean.astype(np.float32))
    return to_dataset("digits", x_tr, y[tr], x_te, y[te], 10, meta)
