"""Synthetic data with a known ground truth: sparse features (for SAEs) and a linear teacher.

``sparse_features`` (task "reconstruction", y = x): ``n_latents`` random unit directions in
``dim`` dimensions (more latents than dims means superposition); each is active independently with
probability ``sparsity`` and, when active, has magnitude ~ U(0, 1) — uniform rather than
exponential so every active feature is bounded and a dead-latent count is not dominated by rare
huge activations. x is the sum of the active features, with no additive noise, so a perfect SAE
can reach FVU 0; ``meta["true_features"]`` (n_latents × dim) lets diagnostics score recovery.

``teacher_student`` (task "regression"): x ~ N(0, I_dim), y = x·w* + jitter·ε with
w* ~ N(0, I/dim) (so Var(x·w*) ≈ 1) and ε ~ N(0, 1), on train and test alike; ``meta["w_star"]``.

Neither is standardised: that would break y = x (sparse) or y = x·w* (teacher), and x ~ N(0, I)
already has unit scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.data import Dataset, register_dataset
from engine.data._common import DIM, JITTER, data_rng
from engine.plugin import Param

if TYPE_CHECKING:
    from engine.config import DataConfig

_FEATURES = 501
_CODES = 502
_TEACHER = 511
_INPUTS = 512
_TARGET_NOISE = 513

N_LATENTS = Param("n_latents", int, 256, 1, 65536, help="sparse_features: number of ground-truth features")
SPARSITY = Param("sparsity", float, 0.02, 0, 1, min_open=True, max_open=True,
                 help="sparse_features: probability a feature is active")

# Rows generated per block, bounding the (rows × n_latents) activation matrix in memory.
_BLOCK_ROWS = 4096


def _sparse_codes(n: int, n_latents: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """(n, n_latents) float32 codes: Bernoulli(sparsity) masks times U(0, 1) magnitudes."""
    codes = np.empty((n, n_latents), dtype=np.float32)
    for start in range(0, n, _BLOCK_ROWS):
        rows = min(_BLOCK_ROWS, n - start)
        active = rng.random((rows, n_latents), dtype=np.float32) < sparsity
        codes[start : start + rows] = active * rng.random((rows, n_latents), dtype=np.float32)
    return codes


@register_dataset("sparse_features", task="reconstruction", params=(DIM, N_LATENTS, SPARSITY))
def sparse_features(cfg: DataConfig, seed: int) -> Dataset:
    """x = Σ_active magnitude · feature, y = x; ground-truth features in ``meta``."""
    features = data_rng(seed, _FEATURES).standard_normal((cfg.n_latents, cfg.dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    features = features.astype(np.float32)
    codes = _sparse_codes(cfg.n_train + cfg.n_test, cfg.n_latents, cfg.sparsity, data_rng(seed, _CODES))
    x = torch.from_numpy(codes @ features)
    x_train, x_test = x[: cfg.n_train], x[cfg.n_train :]
    return Dataset(
        name="sparse_features",
        task="reconstruction",
        x_train=x_train,
        y_train=x_train.clone(),
        x_test=x_test,
        y_test=x_test.clone(),
        meta={
            "true_features": torch.from_numpy(features),
            "n_latents": cfg.n_latents,
            "sparsity": cfg.sparsity,
            "magnitude": "uniform(0, 1)",
        },
    )


@register_dataset("teacher_student", task="regression", params=(JITTER, DIM))
def teacher_student(cfg: DataConfig, seed: int) -> Dataset:
    """Noisy linear teacher: y = x·w* + jitter·ε, y of shape (N, 1)."""
    n = cfg.n_train + cfg.n_test
    w_star = data_rng(seed, _TEACHER).standard_normal(cfg.dim) / np.sqrt(cfg.dim)
    x = data_rng(seed, _INPUTS).standard_normal((n, cfg.dim))
    y = x @ w_star + cfg.jitter * data_rng(seed, _TARGET_NOISE).standard_normal(n)
    x_t = torch.from_numpy(x.astype(np.float32))
    y_t = torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    return Dataset(
        name="teacher_student",
        task="regression",
        x_train=x_t[: cfg.n_train],
        y_train=y_t[: cfg.n_train],
        x_test=x_t[cfg.n_train :],
        y_test=y_t[cfg.n_train :],
        meta={"w_star": torch.from_numpy(w_star.astype(np.float32)), "noise_std": cfg.jitter},
    )
