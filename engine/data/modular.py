"""Modular arithmetic a ∘ b mod p: the grokking dataset.

The full table of pairs is enumerated (p² pairs; p·(p − 1) for division, where b = 0 is
excluded) and split by a seeded permutation: ``round(train_frac · N)`` pairs train, the rest test,
so every pair is in exactly one side. ``n_train``/``n_test`` do not apply here.

Encodings: ``onehot`` — x = [onehot(a), onehot(b)] (2p dims) for MLPs; ``tokens`` — x = [a, b, p]
with p the "=" token (vocab p + 1), stored as float32 like every other input; the transformer
casts it back to long. ``meta["pairs_train"/"pairs_test"]`` keep the integer (a, b) pairs for the
Fourier/progress-measure diagnostics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from engine.data import Dataset, DatasetFamily, register_family
from engine.data._common import data_rng
from engine.plugin import Param

if TYPE_CHECKING:
    from engine.config import DataConfig

_SPLIT = 401


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def modular_table(p: int, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All operand pairs and their results: ``(a, b, c)`` int64 arrays with c = a ∘ b mod p.

    Division is a · b^(p−2) mod p (Fermat's little theorem), hence only defined for prime p.
    """
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    elif op == "/":
        if not _is_prime(p):
            raise ValueError(f"data.p: division mod p needs a prime modulus (got {p})")
        a, b = a[b != 0], b[b != 0]
        inverse = np.array([0] + [pow(int(v), p - 2, p) for v in range(1, p)], dtype=np.int64)
        c = (a * inverse[b]) % p
    else:
        raise ValueError(f"data.op: must be one of + - * / (got {op!r})")
    return a.astype(np.int64), b.astype(np.int64), c.astype(np.int64)


def encode(a: Tensor, b: Tensor, p: int, encoding: str) -> Tensor:
    """Model inputs for operand pairs: concatenated one-hots (2p) or tokens ``[a, b, p]``."""
    if encoding == "onehot":
        x = torch.zeros(len(a), 2 * p)
        rows = torch.arange(len(a))
        x[rows, a] = 1.0
        x[rows, p + b] = 1.0
        return x
    if encoding == "tokens":
        return torch.stack([a, b, torch.full_like(a, p)], dim=1).to(torch.float32)
    raise ValueError(f"data.encoding: must be onehot or tokens (got {encoding!r})")


# One-hot inputs hold 2p floats per pair and p² pairs: above this p they no longer fit a laptop.
MAX_ONEHOT_P = 400


@register_family
class Modular(DatasetFamily):
    """Modular arithmetic a ∘ b mod p (grokking): the full table, split by train_frac."""

    name = "modular"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"vector", "tokens"})
    params = (
        Param("p", int, 97, 2, 1000, help="modulus for modular arithmetic"),
        Param("op", str, "+", choices=("+", "-", "*", "/"), help="the operation a ∘ b"),
        Param("train_frac", float, 0.3, 0, 1, min_open=True, max_open=True,
              help="modular: fraction of all pairs used for training"),
        Param("encoding", str, "onehot", choices=("onehot", "tokens"),
              help="onehot: 2p-dim vectors for MLPs; tokens: [a, b, =] for the transformer"),
    )

    @classmethod
    def inputs(cls, cfg: Any) -> str:
        return "tokens" if cfg.encoding == "tokens" else "vector"

    @classmethod
    def num_classes(cls, cfg: Any) -> int | None:
        return int(cfg.p)

    @classmethod
    def require_inputs(cls, cfg: Any, accepted: frozenset[str], model: str) -> None:
        if "tokens" in accepted:
            raise ValueError(f"data.encoding: the {model} reads tokens; set data.encoding=tokens")
        raise ValueError(f"data.encoding: {model} needs onehot inputs; set data.encoding=onehot")

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.op == "/" and not _is_prime(cfg.p):
            raise ValueError(f"data.p: division mod p needs a prime modulus (got {cfg.p})")
        if cfg.encoding == "onehot" and cfg.p > MAX_ONEHOT_P:
            gigabytes = 2 * cfg.p**3 * 4 / 1e9
            raise ValueError(f"data.p: one-hot inputs for p={cfg.p} need {gigabytes:.1f} GB; use p ≤ {MAX_ONEHOT_P}, "
                             "or data.encoding=tokens with a model that reads tokens")

    @classmethod
    def build(cls, cfg: DataConfig, seed: int) -> Dataset:
        return modular(cfg, seed)


def modular(cfg: DataConfig, seed: int) -> Dataset:
    """Seeded ``train_frac`` split of the full a ∘ b mod p table (p classes)."""
    p = cfg.p
    a, b, c = (torch.from_numpy(v) for v in modular_table(p, cfg.op))
    n = len(c)
    n_train = min(max(round(cfg.train_frac * n), 1), n - 1)
    order = torch.from_numpy(data_rng(seed, _SPLIT).permutation(n))
    tr, te = order[:n_train], order[n_train:]
    return Dataset(
        name="modular",
        task="classification",
        x_train=encode(a[tr], b[tr], p, cfg.encoding),
        y_train=c[tr].clone(),
        x_test=encode(a[te], b[te], p, cfg.encoding),
        y_test=c[te].clone(),
        num_classes=p,
        meta={
            "p": p,
            "op": cfg.op,
            "vocab": p + 1,
            "encoding": cfg.encoding,
            "pairs_train": torch.stack([a[tr], b[tr]], dim=1),
            "pairs_test": torch.stack([a[te], b[te]], dim=1),
        },
    )
