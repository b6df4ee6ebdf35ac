"""High-dimensional noisy XOR (parity): the "benign overfitting → grokking" toy.

x = s + jitter·ε with s ~ uniform{−1, +1}^dim and ε ~ N(0, I); the label is the parity of the
number of negative signs among the first ``informative`` coordinates of the *clean* corner s, so
the jitter blurs the inputs but never the labels (label noise is a separate, explicit knob). The
remaining ``dim − informative`` coordinates are pure distractors, which is what makes a wide
network able to memorise before it generalises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from engine.data import Dataset, register_dataset
from engine.data._common import DIM, JITTER, data_rng, points_kind, standardize_by_train, to_dataset
from engine.plugin import Param

if TYPE_CHECKING:
    from engine.config import DataConfig

_GENERATE = 201
INFORMATIVE = Param("informative", int, 2, 1, 64, help="xor: number of informative dimensions (parity)")


def check_xor(cfg: Any) -> None:
    """The parity needs as many dimensions as it reads: refuse before building, naming both keys."""
    if cfg.dim < cfg.informative:
        raise ValueError(
            f"data.dim: must be ≥ data.informative ({cfg.informative}) for xor (got {cfg.dim}); "
            "raise data.dim or lower data.informative"
        )


@register_dataset("xor", inputs=points_kind, kinds=("points2d", "vector"), params=(JITTER, DIM, INFORMATIVE),
                  classes=2, check=check_xor)
def xor(cfg: DataConfig, seed: int) -> Dataset:
    """Parity of ``informative`` sign coordinates hidden in ``dim`` dimensions (2 classes)."""
    check_xor(cfg)
    n = cfg.n_train + cfg.n_test
    rng = data_rng(seed, _GENERATE)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, cfg.dim))
    x = signs + cfg.jitter * rng.standard_normal((n, cfg.dim))
    y = (signs[:, : cfg.informative] < 0).sum(axis=1) % 2
    # Rows are i.i.d., so a plain cut is already a random split.
    x_tr, x_te, y_tr, y_te = x[: cfg.n_train], x[cfg.n_train :], y[: cfg.n_train], y[cfg.n_train :]
    meta: dict[str, Any] = {"informative": cfg.informative}
    if cfg.standardize:
        x_tr, x_te, stats = standardize_by_train(x_tr, x_te)
        meta.update(stats)
    return to_dataset("xor", x_tr, y_tr, x_te, y_te, 2, meta)
